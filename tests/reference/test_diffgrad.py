"""diffGrad against torch-optimizer 0.3.0's ``DiffGrad`` (identical to the official ``diffGrad_v2.py``).

Tolerance: ``rtol=0, atol=1e-14`` on every parameter entry at every one of the 40 float64 steps.
Both codes compute in float64 from the same gradients; they differ only in rounding (our EMA is
a ``lerp`` where theirs is ``mul`` + ``add``, and we use ``sigmoid`` where they compute
``1 / (1 + exp(-x))``). Measured: the largest absolute difference over all settings below is
under 1e-15, a few ulps of parameters of size ~1-3 (the largest relative difference, ~5e-13, is
on an entry passing close to zero), so ``atol=1e-14`` leaves a margin of ~10x for other CPUs'
vector kernels and still fails on any change of the math.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch_optimizer

import steepest
from tests.reference._compare import assert_same_trajectory

RTOL, ATOL = 0.0, 1e-14


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"lr": 1e-2}, id="lr"),
        pytest.param({"lr": 1e-2, "weight_decay": 0.1}, id="l2-wd"),
        pytest.param({"lr": 3e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 1e-3}, id="all-set"),
    ],
)
def test_diffgrad_matches_torch_optimizer(kwargs: dict[str, Any], foreach: bool) -> None:
    assert_same_trajectory(
        lambda p: steepest.DiffGrad(p, **kwargs, foreach=foreach),
        lambda p: torch_optimizer.DiffGrad(p, **kwargs),
        steps=40,
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("foreach", [False, True])
def test_diffgrad_matches_with_two_param_groups(foreach: bool) -> None:
    def groups(params: list) -> list[dict]:
        return [{"params": params[:2]}, {"params": params[2:], "lr": 5e-3, "weight_decay": 0.05, "betas": (0.8, 0.99)}]

    assert_same_trajectory(
        lambda p: steepest.DiffGrad(p, lr=1e-2, foreach=foreach),
        lambda p: torch_optimizer.DiffGrad(p, lr=1e-2),
        groups=groups,
        rtol=RTOL,
        atol=ATOL,
    )


def test_diffgrad_leaves_grad_unchanged_under_weight_decay() -> None:
    """The official code adds the L2 term to ``p.grad`` in place; ours uses a temporary."""
    for foreach in (False, True):
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
        opt = steepest.DiffGrad([w], lr=0.1, weight_decay=0.5, foreach=foreach)
        w.grad = torch.tensor([0.5, -0.5], dtype=torch.float64)
        opt.step()
        assert w.grad.tolist() == [0.5, -0.5]
        assert opt.state[w]["previous_grad"].tolist() == [1.0, -1.5]  # g + wd * p, as the official code
