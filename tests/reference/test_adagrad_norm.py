r"""AdaGradNorm against a float64 transcription of Ward, Wu, Bottou 2019, Algorithm 1.

Oracle: :func:`tests.reference.paper_algorithms.adagrad_norm`, one scalar :math:`b` over the
flat vector of the whole param group (or one per tensor for ``scope="tensor"``). The second
author's PyTorch ``Adagradnorm`` (xwuShirley/pytorch) is not an oracle: it keeps one
accumulator per output row, not Algorithm 1's single scalar.

Tolerance: ``atol=1e-14``, ``rtol=0`` on parameters of size O(1) over 40 steps (about 50 ulps
at 1; the largest difference measured is 3e-15). :math:`\|G\|^2` is summed in a different
order (per-tensor norms, squared and added, against one flat loop of squares), a few ulps per
step.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import steepest
from tests.reference._compare import assert_same_trajectory
from tests.reference.paper_algorithms import FlatReference, adagrad_norm


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 1.0},
        {"lr": 0.5, "initial_accumulator": 2.0, "weight_decay": 0.1},
        {"lr": 1.0, "scope": "tensor"},
        {"lr": 1.0, "initial_accumulator": 1e-3, "scope": "tensor", "weight_decay": 0.1},
    ],
)
def test_adagrad_norm_matches_paper(kwargs: dict[str, Any], foreach: bool) -> None:
    assert_same_trajectory(
        lambda p: steepest.AdaGradNorm(p, **kwargs, foreach=foreach),
        lambda p: FlatReference(p, adagrad_norm, **kwargs),
        steps=40,
        rtol=0.0,
        atol=1e-14,
    )


@pytest.mark.parametrize("foreach", [False, True])
def test_each_param_group_has_its_own_b(foreach: bool) -> None:
    def groups(params: list[Any]) -> list[dict[str, Any]]:
        return [{"params": params[:2]}, {"params": params[2:], "lr": 0.5, "initial_accumulator": 3.0}]

    assert_same_trajectory(
        lambda p: steepest.AdaGradNorm(p, lr=1.0, foreach=foreach),
        lambda p: FlatReference(p, adagrad_norm, lr=1.0),
        groups=groups,
        rtol=0.0,
        atol=1e-14,
    )


def _params(dtype: torch.dtype = torch.float64) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(5)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(dtype)) for s in ((3, 2), (4,))]


_GRADS = [[[0.5, -1.0], [2.0, 0.0], [0.125, 0.375]], [1.0, -1.5, 0.25, 0.0]]  # exact in bf16


def _set_grads(params: list[torch.nn.Parameter], scale: float, skip: int | None = None) -> None:
    for i, (p, g) in enumerate(zip(params, _GRADS, strict=True)):
        p.grad = None if i == skip else scale * torch.tensor(g, dtype=p.dtype)


@pytest.mark.parametrize("foreach", [False, True])
def test_missed_steps_continue_from_the_longest_history(foreach: bool) -> None:
    """Parameter 0 has no gradient in step 2: step 3 starts from parameter 1's b^2."""
    ours, theirs = _params(), _params()
    opt = steepest.AdaGradNorm(ours, lr=1.0, initial_accumulator=0.5, foreach=foreach)
    ref = FlatReference(theirs, adagrad_norm, lr=1.0, initial_accumulator=0.5)
    for step, skip in enumerate([None, 0, None]):
        for params, optimizer in ((ours, opt), (theirs, ref)):
            _set_grads(params, 1.0 + step, skip)
            optimizer.step()
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=0.0, atol=1e-14)
    g0, g1 = (sum(v * v for v in torch.tensor(g).reshape(-1).tolist()) for g in _GRADS)
    b2_step1 = 0.25 + g0 + g1
    b2_step2 = b2_step1 + 4 * g1
    b2_step3 = b2_step2 + 9 * (g0 + g1)
    assert opt.state[ours[0]]["sum_sq"].item() == pytest.approx(b2_step3, rel=1e-15)
    assert opt.state[ours[1]]["sum_sq"].item() == pytest.approx(b2_step3, rel=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
def test_disjoint_steps_keep_only_the_copies_they_see(foreach: bool) -> None:
    """Documented limit of per-parameter copies: a step sees the b^2 of its own parameters only."""
    params = _params()
    opt = steepest.AdaGradNorm(params, lr=1.0, initial_accumulator=0.5, foreach=foreach)
    _set_grads(params, 1.0, skip=1)
    opt.step()
    _set_grads(params, 1.0, skip=0)
    opt.step()
    g0, g1 = (sum(v * v for v in torch.tensor(g).reshape(-1).tolist()) for g in _GRADS)
    assert opt.state[params[0]]["sum_sq"].item() == pytest.approx(0.25 + g0, rel=1e-15)
    assert opt.state[params[1]]["sum_sq"].item() == pytest.approx(0.25 + g1, rel=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    ("dtype", "state_dtype"),
    [(torch.bfloat16, torch.float32), (torch.float32, torch.float32), (torch.float64, torch.float64)],
)
def test_accumulator_is_float32_or_wider(dtype: torch.dtype, state_dtype: torch.dtype, foreach: bool) -> None:
    params = _params(dtype)
    opt = steepest.AdaGradNorm(params, initial_accumulator=0.5, foreach=foreach)
    for step in range(3):
        _set_grads(params, 1.0 + step)
        opt.step()
    g0, g1 = (sum(v * v for v in torch.tensor(g).reshape(-1).tolist()) for g in _GRADS)
    expected = 0.25 + (1 + 4 + 9) * (g0 + g1)  # the gradients are exact in bf16
    for p in params:
        sum_sq = opt.state[p]["sum_sq"]
        assert sum_sq.dtype == state_dtype and sum_sq.shape == ()
        assert sum_sq.item() == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("foreach", [False, True])
def test_tensor_scope_keeps_one_b_per_tensor(foreach: bool) -> None:
    params = _params()
    before = [p.detach().clone() for p in params]
    opt = steepest.AdaGradNorm(params, lr=1.0, initial_accumulator=0.5, scope="tensor", foreach=foreach)
    _set_grads(params, 1.0)
    opt.step()
    for p, b, g in zip(params, before, _GRADS, strict=True):
        grad = torch.tensor(g, dtype=torch.float64)
        b_squared = 0.25 + float((grad * grad).sum())
        assert opt.state[p]["sum_sq"].item() == pytest.approx(b_squared, rel=1e-15)
        torch.testing.assert_close(p.detach(), b - grad / math.sqrt(b_squared), rtol=0.0, atol=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_bfloat16_step_size_is_not_rounded_to_bfloat16(scope: str, foreach: bool) -> None:
    """The step 1/b, b = 1.0029296875, lies between two bfloat16 values: w must be -0.99609375, not -1."""
    b = 1.0029296875
    w = torch.nn.Parameter(torch.zeros(1, dtype=torch.bfloat16))
    opt = steepest.AdaGradNorm([w], lr=1.0, initial_accumulator=math.sqrt(b * b - 1.0), scope=scope, foreach=foreach)
    w.grad = torch.ones(1, dtype=torch.bfloat16)
    opt.step()
    assert w.item() == -0.99609375
