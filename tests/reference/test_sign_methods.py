"""SignSGD and Signum against float64 transcriptions of Bernstein et al. 2018, Algorithms 1 and 3.

No PyPI package is a faithful oracle (kozistr's ``SignSGD`` couples weight decay, MXNet's
``Signum`` puts a coupled decay inside the momentum), so the oracle is
:mod:`tests.reference.paper_algorithms`, written from the paper.

Tolerance: exact (``atol=0``). The parameter update is ``x*(1 - lr*wd) - lr*s`` with
``s`` in {-1, 0, 1}: the same two roundings in both (the product ``lr*s`` is exact). Signum's
momentum is formed differently (``lerp`` against ``beta*m + (1-beta)*g``, about 1e-17 apart),
but only its sign reaches the parameters, and no momentum entry of these runs comes within
1e-16 of zero, so the parameters agree bit for bit.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import steepest
from tests.reference._compare import assert_same_trajectory
from tests.reference.paper_algorithms import FlatReference, sign_sgd, signum


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("kwargs", [{"lr": 1e-2}, {"lr": 3e-2, "weight_decay": 0.5}])
def test_sign_sgd_matches_paper(kwargs: dict[str, Any], foreach: bool) -> None:
    assert_same_trajectory(
        lambda p: steepest.SignSGD(p, **kwargs, foreach=foreach),
        lambda p: FlatReference(p, sign_sgd, **kwargs),
        steps=40,
        rtol=0.0,
        atol=0.0,
    )


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 1e-2},
        {"lr": 1e-2, "momentum": 0.5, "weight_decay": 0.3},
        {"lr": 2e-2, "momentum": 0.0},
    ],
)
def test_signum_matches_paper(kwargs: dict[str, Any], foreach: bool) -> None:
    defaults = {"momentum": 0.9, **kwargs}
    assert_same_trajectory(
        lambda p: steepest.Signum(p, **kwargs, foreach=foreach),
        lambda p: FlatReference(p, signum, **defaults),
        steps=40,
        rtol=0.0,
        atol=0.0,
    )


def _two_groups(params: list[Any]) -> list[dict[str, Any]]:
    return [{"params": params[:2]}, {"params": params[2:], "lr": 5e-3, "weight_decay": 0.2}]


@pytest.mark.parametrize("foreach", [False, True])
def test_sign_methods_with_two_param_groups(foreach: bool) -> None:
    assert_same_trajectory(
        lambda p: steepest.SignSGD(p, lr=2e-2, foreach=foreach),
        lambda p: FlatReference(p, sign_sgd, lr=2e-2),
        groups=_two_groups,
        rtol=0.0,
        atol=0.0,
    )
    assert_same_trajectory(
        lambda p: steepest.Signum(p, lr=2e-2, momentum=0.8, foreach=foreach),
        lambda p: FlatReference(p, signum, lr=2e-2, momentum=0.8),
        groups=_two_groups,
        rtol=0.0,
        atol=0.0,
    )


@pytest.mark.parametrize("foreach", [False, True])
def test_sign_sgd_makes_non_finite_gradients_visible(foreach: bool) -> None:
    """torch.sign(NaN) is 0; SignSGD keeps no state, so it must put the NaN in the parameter."""
    w = torch.nn.Parameter(torch.zeros(5))
    opt = steepest.SignSGD([w], lr=0.1, foreach=foreach)
    w.grad = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -2.0])
    opt.step()
    values = w.detach().tolist()
    assert all(v != v for v in values[:3])  # NaN
    assert values[3:] == [0.0, pytest.approx(0.1)]


@pytest.mark.parametrize("foreach", [False, True])
def test_signum_nan_gradient_reaches_the_parameter(foreach: bool) -> None:
    """The NaN lands in the buffer and, signed NaN-preservingly, in the parameter (not sign(NaN) = 0)."""
    w = torch.nn.Parameter(torch.zeros(2))
    opt = steepest.Signum([w], lr=0.1, foreach=foreach)
    w.grad = torch.tensor([float("nan"), 1.0])
    opt.step()
    assert torch.isnan(opt.state[w]["momentum_buffer"][0])
    values = w.detach().tolist()
    assert values[0] != values[0] and values[1] == pytest.approx(-0.1)
