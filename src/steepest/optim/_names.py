"""Parameter names for optimizers whose update depends on what each tensor is; warnings aimed at the user's line."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


def split_named_params(owner: str, param_group: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    """``(names, params)`` of a group given as ``(name, parameter)`` pairs or with ``param_names``.

    Raises:
        ValueError: names are missing, not strings, or do not match the parameters one to one.
    """
    params = param_group["params"]
    params = [params] if isinstance(params, Tensor) else list(params)
    names = param_group.get("param_names")
    if params and all(isinstance(p, tuple) and len(p) == 2 for p in params):
        names, params = [p[0] for p in params], [p[1] for p in params]
    if names is None or len(names) != len(params) or any(isinstance(p, tuple) for p in params):
        raise ValueError(
            f"{owner} needs parameter names: pass model.named_parameters() or param groups whose "
            "params are (name, parameter) pairs"
        )
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"{owner}: parameter names must be strings")
    return list(names), params


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside steepest and torch.

    Construction warnings are raised deep inside ``torch.optim.Optimizer.__init__`` (which calls
    ``add_param_group``) or inside steepest's helpers; a fixed ``stacklevel`` points at torch or at
    steepest for one call path and at the user's line for another. Counted from the caller of this
    function, as :func:`warnings.warn` counts.
    """
    roots = tuple(os.path.dirname(m.__file__) + os.sep for m in (sys.modules["steepest"], torch) if m.__file__)
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(roots):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level
