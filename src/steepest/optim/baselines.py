"""torch's SGD and AdamW as registry baselines, with steepest's strict ``load_state_dict``.

The math is torch's, untouched: these subclasses only declare their state so that a
mismatched checkpoint raises before anything is loaded, and ``steepest.state_bytes`` and
the conformance tests can account for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

from steepest.optim._base import Capabilities, ParamGroup, StateSpec, StateSpecMixin
from steepest.optim._validation import COMMON_RULES, Boolean, Rule, check_hyperparameters


class SGD(StateSpecMixin, torch.optim.SGD):
    """:class:`torch.optim.SGD` (momentum, Nesterov, weight decay), unchanged math.

    State per parameter: ``momentum_buffer`` (like the parameter) when ``momentum > 0``.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = steepest.SGD([w], lr=0.5)
        >>> w.grad = torch.tensor([1.0])
        >>> _ = opt.step()
        >>> w.detach()
        tensor([0.5000])
    """

    capabilities = Capabilities(supports_sparse=True)

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        bound = inspect.signature(torch.optim.SGD).bind(params, *args, **kwargs)
        check_hyperparameters("SGD", self._hyperparameter_rules(), {**bound.arguments, "params": None})
        super().__init__(params, *args, **kwargs)

    __init__.__signature__ = inspect.signature(torch.optim.SGD.__init__)  # type: ignore[attr-defined]

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``momentum_buffer`` when momentum is on, nothing otherwise."""
        if group["momentum"] == 0:
            return {}
        return {"momentum_buffer": (tuple(param.shape), param.dtype)}

    def _hyperparameter_rules(self) -> Mapping[str, Rule]:
        return {**COMMON_RULES, "nesterov": Boolean(), "differentiable": Boolean(), "fused": Boolean(True)}

    @classmethod
    def describe_state(cls) -> str:
        """One line stating the state kept per parameter."""
        return "momentum_buffer (like the parameter) when momentum > 0"


class AdamW(StateSpecMixin, torch.optim.AdamW):
    """:class:`torch.optim.AdamW`, unchanged math: the baseline every benchmark compares to.

    State per parameter: ``step`` (scalar), ``exp_avg`` and ``exp_avg_sq`` (like the
    parameter), plus ``max_exp_avg_sq`` with ``amsgrad=True``.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = steepest.AdamW([w], lr=0.1, weight_decay=0.0)
        >>> w.grad = torch.tensor([3.0])
        >>> _ = opt.step()
        >>> w.detach()
        tensor([0.9000])
    """

    capabilities = Capabilities()

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        bound = inspect.signature(torch.optim.AdamW).bind(params, *args, **kwargs)
        check_hyperparameters("AdamW", self._hyperparameter_rules(), {**bound.arguments, "params": None})
        super().__init__(params, *args, **kwargs)

    __init__.__signature__ = inspect.signature(torch.optim.AdamW.__init__)  # type: ignore[attr-defined]

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``step``, ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad)."""
        like = (tuple(param.shape), param.dtype)
        # torch keeps AdamW's step in float64 when that is the default dtype.
        step_dtype = torch.float32 if group.get("capturable") or group.get("fused") else _get_scalar_dtype()
        shapes: StateSpec = {"step": ((), step_dtype), "exp_avg": like, "exp_avg_sq": like}
        if group["amsgrad"]:
            shapes["max_exp_avg_sq"] = like
        return shapes

    def _hyperparameter_rules(self) -> Mapping[str, Rule]:
        return {**COMMON_RULES, "amsgrad": Boolean(), "capturable": Boolean(), "differentiable": Boolean()}

    @classmethod
    def describe_state(cls) -> str:
        """One line stating the state kept per parameter."""
        return "step (scalar), exp_avg and exp_avg_sq (like the parameter); max_exp_avg_sq with amsgrad"
