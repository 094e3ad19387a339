"""The foreach path does no per-parameter tensor math in Python.

We count the calls from Python into torch (tensor methods and torch functions) during one
step, with 6 and with 24 parameters. A foreach path issues the same number of calls whatever
the number of parameters; a Python loop over parameters would add calls per parameter.
torch's own baselines (``sgd``, ``adamw``) are excluded: their non-capturable foreach path
reads each step counter with ``.item()``, which is torch's choice, not ours.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

import pytest
import torch

from steepest.optim._registry import REGISTRY
from tests.optim.optim_db import DB, build

# Gradient-free (zeroth-order) optimizers are left out: they draw each parameter's direction
# from its own seeded generator, one call per parameter by nature (there is no foreach randn),
# and materialising every direction at once would cost a copy of the model.
# Optimizers needing Hessian-vector products (AdaHessian, Sophia-H: per-parameter seeded probes,
# as above) or a closure (Newton-CG: a line search over whole-model vectors) cannot be driven by
# plain gradients here; M-FAC's work is a matrix product per tensor (window @ g), by nature.
KEYS = sorted(
    k
    for k, e in REGISTRY.items()
    if "baseline" not in e.families
    and not e.capabilities.gradient_free
    and not e.capabilities.needs_create_graph
    and not e.capabilities.requires_closure
    and k != "mfac"
)


def _is_torch_call(func: Any) -> bool:
    owner = getattr(func, "__self__", None)
    if isinstance(owner, torch.Tensor):
        return True
    module = getattr(func, "__module__", None) or ""
    return module.startswith("torch")


def _torch_calls_in_step(key: str, variant: dict[str, Any], n_params: int) -> int:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4, generator=gen)) for _ in range(n_params)]
    opt = build(key, params, **variant, foreach=True)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()  # first step creates state (a per-parameter allocation, once)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    count = 0

    def profiler(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event == "c_call" and _is_torch_call(arg):
            count += 1

    sys.setprofile(profiler)
    try:
        opt.step()
    finally:
        sys.setprofile(None)
    return count


@pytest.mark.parametrize("key", KEYS)
def test_foreach_step_has_no_per_parameter_torch_calls(key: str) -> None:
    for variant in DB[key].variants:
        small = _torch_calls_in_step(key, variant, 6)
        large = _torch_calls_in_step(key, variant, 24)
        assert small > 0
        assert large == small, f"{key} {variant}: {small} torch calls with 6 params, {large} with 24"
