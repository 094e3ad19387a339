"""NormalizedSD against a float64 transcription of steepest descent w.r.t. a norm.

Oracle: :func:`tests.reference.paper_algorithms.normalized_steepest_descent`, written from
Gunasekar, Lee, Soudry, Srebro (ICML 2018, arXiv:1802.08246) as one loop over the flat vector
of the whole param group, so it also checks that the norm is global over the group.

Tolerances, all absolute on parameters of size O(1), over 40 steps:

* normalized l_inf and l1: exact (``atol=0``). The step is ``lr * s`` with ``s`` in
  {-1, 0, 1} on the same coordinates, after the same decay rounding.
* everything else: ``atol=1e-14`` (about 50 ulps at 1; the largest difference measured is
  1e-15). The dual norm or the l2 normalisation is summed in a different order (per tensor,
  then over tensors, against one flat loop) and divided in a different place, a few ulps
  per step.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import steepest
from tests.reference._compare import assert_same_trajectory
from tests.reference.paper_algorithms import FlatReference, normalized_steepest_descent

_LR = {"l2": 0.1, "linf": 0.01, "l1": 0.1}


def _atol(norm: str, dual_scaled: bool) -> float:
    return 0.0 if norm in ("linf", "l1") and not dual_scaled else 1e-14


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.2])
@pytest.mark.parametrize("dual_scaled", [False, True])
@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_normalized_sd_matches_paper(norm: str, dual_scaled: bool, weight_decay: float, foreach: bool) -> None:
    # The l_inf dual norm ||g||_1 is about 20 here: a smaller lr keeps the run stable.
    lr = 1e-3 if (norm, dual_scaled) == ("linf", True) else _LR[norm]
    kwargs = {"lr": lr, "norm": norm, "dual_scaled": dual_scaled, "weight_decay": weight_decay}
    assert_same_trajectory(
        lambda p: steepest.NormalizedSD(p, **kwargs, foreach=foreach),
        lambda p: FlatReference(p, normalized_steepest_descent, **kwargs),
        steps=40,
        rtol=0.0,
        atol=_atol(norm, dual_scaled),
    )


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_norm_is_per_param_group(norm: str, foreach: bool) -> None:
    def groups(params: list[Any]) -> list[dict[str, Any]]:
        return [{"params": params[:2]}, {"params": params[2:], "lr": _LR[norm] / 2, "weight_decay": 0.1}]

    assert_same_trajectory(
        lambda p: steepest.NormalizedSD(p, lr=_LR[norm], norm=norm, foreach=foreach),
        lambda p: FlatReference(p, normalized_steepest_descent, lr=_LR[norm], norm=norm),
        groups=groups,
        rtol=0.0,
        atol=_atol(norm, False),
    )


def _params(*values: list[Any], dtype: torch.dtype = torch.float64) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.tensor(v, dtype=dtype)) for v in values]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_parameters_without_gradient_are_outside_the_norm(norm: str, foreach: bool) -> None:
    ours = _params([[1.0, -2.0], [0.5, 3.0]], [7.0, -9.0], [0.25])
    theirs = _params([[1.0, -2.0], [0.5, 3.0]], [7.0, -9.0], [0.25])
    opt = steepest.NormalizedSD(ours, lr=0.1, norm=norm, dual_scaled=True, foreach=foreach)
    ref = FlatReference(theirs, normalized_steepest_descent, lr=0.1, norm=norm, dual_scaled=True)
    for params in (ours, theirs):
        params[0].grad = torch.tensor([[0.3, -0.4], [0.0, 1.2]], dtype=torch.float64)
        params[1].grad = None  # the largest gradient would be here
        params[2].grad = torch.tensor([-0.7], dtype=torch.float64)
    opt.step()
    ref.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0.0, atol=1e-15)
    assert ours[1].tolist() == [7.0, -9.0]


@pytest.mark.parametrize("foreach", [False, True])
def test_l1_ties_take_the_first_coordinate_in_parameter_order(foreach: bool) -> None:
    a, b = _params([[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0])
    opt = steepest.NormalizedSD([a, b], lr=0.5, norm="l1", foreach=foreach)
    a.grad = torch.tensor([[1.0, -2.0], [2.0, -2.0]], dtype=torch.float64)
    b.grad = torch.tensor([2.0, -2.0], dtype=torch.float64)
    opt.step()  # five ties at |g| = 2: the first, row-major, is a[0, 1]
    assert a.tolist() == [[0.0, 0.5], [0.0, 0.0]] and b.tolist() == [0.0, 0.0]
    a.grad = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    b.grad = torch.tensor([0.0, -1.0], dtype=torch.float64)
    opt.step()  # a tie across tensors: a wins over b
    assert a.tolist() == [[-0.5, 0.5], [0.0, 0.0]] and b.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("foreach", [False, True])
def test_l1_order_is_the_group_order_across_dtype_buckets(foreach: bool) -> None:
    """The foreach path buckets float32 before float64 here; the tie still goes to b."""
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    empty = torch.nn.Parameter(torch.zeros(0, dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    c = torch.nn.Parameter(torch.tensor([[0.5, -1.0]]))
    opt = steepest.NormalizedSD([a, empty, b, c], lr=0.5, norm="l1", foreach=foreach)
    a.grad, empty.grad = torch.tensor([0.5, -1.0]), torch.zeros(0, dtype=torch.float64)
    b.grad, c.grad = torch.tensor([2.0], dtype=torch.float64), torch.tensor([[-2.0, 1.0]])
    opt.step()
    assert a.tolist() == [1.0, 2.0] and b.tolist() == [2.5] and c.tolist() == [[0.5, -1.0]]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dual_scaled", [False, True])
@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_zero_gradient_and_zero_size_parameters(norm: str, dual_scaled: bool, foreach: bool) -> None:
    params = [
        torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64)),
        torch.nn.Parameter(torch.zeros(0, 4, dtype=torch.float64)),
        torch.nn.Parameter(torch.randn(2, dtype=torch.float64)),
    ]
    before = [p.detach().clone() for p in params]
    opt = steepest.NormalizedSD(params, lr=0.1, norm=norm, dual_scaled=dual_scaled, foreach=foreach)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()  # ||g|| = 0: no move, and no NaN
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p.detach(), b)
    only_empty = torch.nn.Parameter(torch.zeros(0, 4, dtype=torch.float64))
    opt = steepest.NormalizedSD([only_empty], lr=0.1, norm=norm, dual_scaled=dual_scaled, foreach=foreach)
    only_empty.grad = torch.zeros_like(only_empty)
    opt.step()
    assert only_empty.shape == (0, 4)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_nan_gradient_spreads_through_the_norm(norm: str, foreach: bool) -> None:
    a, b = _params([1.0, 2.0], [3.0])
    opt = steepest.NormalizedSD([a, b], lr=0.1, norm=norm, dual_scaled=(norm == "l2"), foreach=foreach)
    a.grad = torch.tensor([float("nan"), 1.0], dtype=torch.float64)
    b.grad = torch.tensor([1.0], dtype=torch.float64)
    opt.step()
    assert torch.isnan(a[0])
    if norm == "l2":  # dual-scaled l2 is gradient descent: the NaN stays in its entry
        assert torch.isfinite(b).all()


@pytest.mark.parametrize("foreach", [False, True])
def test_bfloat16_parameters_use_a_float32_norm(foreach: bool) -> None:
    w = torch.nn.Parameter(torch.zeros(300, dtype=torch.bfloat16))
    opt = steepest.NormalizedSD([w], lr=math.sqrt(300.0), foreach=foreach)
    w.grad = torch.ones(300, dtype=torch.bfloat16)
    opt.step()  # a step of length sqrt(300) along g / ||g||: -1 everywhere
    assert torch.equal(w.detach(), torch.full((300,), -1.0, dtype=torch.bfloat16))  # bf16 norm: -1.0078
