"""AdaBelief against the official adabelief-pytorch 0.2.1 (juntang-zhuang/Adabelief-Optimizer).

Tolerance: ``rtol=0, atol=1e-14`` on every parameter entry at every one of the 40 float64 steps.
Both codes compute in float64 from the same gradients; they differ only in rounding (our EMA is
a ``lerp`` where theirs is ``mul`` + ``add``, our foreach path folds ``sqrt(bc2)`` into the step
size and ``eps``, and the RAdam factor is evaluated in another order). Measured: the largest
absolute difference over all settings below is under 1e-15, a few ulps of parameters of size
~1-3 (the largest relative difference, ~6e-13, is on an entry passing close to zero), so
``atol=1e-14`` leaves a margin of ~10x for other CPUs' vector kernels and still fails on any
change of the math (a relative change of 1e-9 in ``lr`` or ``eps=1e-16`` -> ``1e-15`` fails).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from adabelief_pytorch import AdaBelief as ReferenceAdaBelief

import steepest
from tests.reference._compare import assert_same_trajectory

RTOL, ATOL = 0.0, 1e-14

SETTINGS = [
    pytest.param({}, id="defaults"),
    pytest.param({"lr": 1e-2, "weight_decay": 0.1}, id="decoupled-wd"),
    pytest.param({"lr": 1e-2, "weight_decay": 0.01, "fixed_decay": True}, id="fixed-decay"),
    pytest.param({"lr": 1e-2, "weight_decay": 0.1, "weight_decouple": False}, id="l2-wd"),
    pytest.param({"lr": 1e-2, "rectify": False}, id="unrectified"),
    pytest.param({"lr": 1e-2, "rectify": False, "amsgrad": True, "eps": 1e-8}, id="unrectified-amsgrad"),
    pytest.param({"lr": 1e-2, "amsgrad": True}, id="rectified-amsgrad"),
    pytest.param({"lr": 1e-2, "betas": (0.9, 0.99), "degenerated_to_sgd": False}, id="no-sgd-warmup"),
    pytest.param(
        {
            "lr": 3e-2,
            "betas": (0.8, 0.9),
            "weight_decay": 0.05,
            "weight_decouple": False,
            "rectify": False,
            "amsgrad": True,
        },
        id="l2-amsgrad-short-betas",
    ),
]


def _reference(params: Any, **kwargs: Any) -> ReferenceAdaBelief:
    return ReferenceAdaBelief(params, **kwargs, print_change_log=False)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("kwargs", SETTINGS)
def test_adabelief_matches_adabelief_pytorch(kwargs: dict[str, Any], foreach: bool) -> None:
    assert_same_trajectory(
        lambda p: steepest.AdaBelief(p, **kwargs, foreach=foreach),
        lambda p: _reference(p, **kwargs),
        steps=40,
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"lr": 1e-2, "weight_decay": 0.1}, id="rectified"),
        pytest.param({"lr": 1e-2, "weight_decay": 0.1, "rectify": False, "weight_decouple": False}, id="l2"),
    ],
)
def test_adabelief_matches_with_two_param_groups(kwargs: dict[str, Any], foreach: bool) -> None:
    """The second group has its own lr, weight decay and betas (hence its own RAdam factors)."""

    def groups(params: list) -> list[dict]:
        return [{"params": params[:2]}, {"params": params[2:], "lr": 5e-3, "weight_decay": 0.02, "betas": (0.9, 0.99)}]

    assert_same_trajectory(
        lambda p: steepest.AdaBelief(p, **kwargs, foreach=foreach),
        lambda p: _reference(p, **kwargs),
        groups=groups,
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("foreach", [False, True])
def test_adabelief_l2_leaves_grad_unchanged(foreach: bool) -> None:
    """The official code adds the L2 term to ``p.grad`` in place; ours uses a temporary."""
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = steepest.AdaBelief([w], lr=0.1, weight_decay=0.5, weight_decouple=False, foreach=foreach)
    w.grad = torch.tensor([0.5, -0.5], dtype=torch.float64)
    opt.step()
    assert w.grad.tolist() == [0.5, -0.5]
    assert opt.state[w]["exp_avg"].tolist() == pytest.approx([0.1, -0.15])  # (1 - b1) * (g + wd * p)
