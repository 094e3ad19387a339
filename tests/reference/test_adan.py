"""Adan against kozistr ``pytorch_optimizer.Adan`` 4.1.0 (a faithful port of sail-sg/Adan).

Which of kozistr's flags reproduce the official code (read in its source, then checked here):

* ``weight_decouple=False`` (its default) is the official ``no_prox=False``: the proximal step
  ``p <- (p - update) / (1 + lr * wd)``; ``weight_decouple=True`` is ``no_prox=True``:
  ``p <- p * (1 - lr * wd) - update``.
* ``max_grad_norm`` clips as the official code, with the factor ``min(1, c / (||g|| + eps))`` over
  all groups, but like the official code it accumulates the norm in float32 (and multiplies
  ``p.grad`` in place). Ours accumulates in float64 for float64 gradients.
* Betas are in the code's convention (0.98, 0.92, 0.99) in both; the step is counted per group
  there and per parameter here, which agrees because every parameter has a gradient at every step.

Tolerances (float64, 40 steps, both our paths): ``rtol=1e-12, atol=1e-14`` without kozistr's
clip. The worst differences seen are 4e-14 relative (at entries near zero) and 4e-16 absolute,
i.e. an ulp or two: the same arithmetic reordered (we fold sqrt(1 - beta3^t) into the step sizes
and eps, and use ``lerp``). Clipping done in float64 outside kozistr's optimizer gives the same.
With kozistr's own float32 clip the factor itself differs by ~1e-7 relative, so that test uses
``rtol=1e-5, atol=1e-8`` (worst seen: 3e-7 relative, 1.3e-9 absolute).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pytorch_optimizer import Adan as ReferenceAdan

import steepest
from tests.reference._compare import assert_same_trajectory

RTOL, ATOL = 1e-12, 1e-14


def _groups(params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
    return [{"params": params[:2]}, {"params": params[2:], "lr": 1e-3, "weight_decay": 0.2}]


class _ClipThenStep:
    """Clip all gradients to a global l2 norm in float64 (official formula), then step ``inner``."""

    def __init__(self, inner: torch.optim.Optimizer, max_norm: float, eps: float) -> None:
        self.inner, self.max_norm, self.eps = inner, max_norm, eps

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for g in self.inner.param_groups for p in g["params"] if p.grad is not None]
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        factor = torch.clamp(self.max_norm / (total + self.eps), max=1.0)
        for g in grads:
            g.mul_(factor)
        self.inner.step()


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("no_prox", [False, True])
def test_adan_matches_pytorch_optimizer(no_prox: bool, foreach: bool) -> None:
    kwargs = {"lr": 3e-3, "betas": (0.98, 0.92, 0.99), "weight_decay": 0.05}
    assert_same_trajectory(
        lambda p: steepest.Adan(p, **kwargs, no_prox=no_prox, foreach=foreach),
        lambda p: ReferenceAdan(p, **kwargs, weight_decouple=no_prox, foreach=False),
        groups=_groups,
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("foreach", [False, True])
def test_adan_matches_with_other_betas(foreach: bool) -> None:
    kwargs = {"lr": 1e-2, "betas": (0.9, 0.8, 0.95), "eps": 1e-6, "weight_decay": 0.01}
    assert_same_trajectory(
        lambda p: steepest.Adan(p, **kwargs, foreach=foreach),
        lambda p: ReferenceAdan(p, **kwargs, foreach=False),
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("foreach", [False, True])
def test_adan_clipping_matches_float64_clip_outside(foreach: bool) -> None:
    # The quadratic's gradient norm is about 10, so max_grad_norm=1 clips at every step.
    kwargs = {"lr": 3e-3, "weight_decay": 0.05}
    assert_same_trajectory(
        lambda p: steepest.Adan(p, **kwargs, max_grad_norm=1.0, foreach=foreach),
        lambda p: _ClipThenStep(ReferenceAdan(p, **kwargs, foreach=False), 1.0, 1e-8),  # type: ignore[arg-type,return-value]
        groups=_groups,
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("foreach", [False, True])
def test_adan_clipping_matches_pytorch_optimizer_float32_norm(foreach: bool) -> None:
    kwargs = {"lr": 3e-3, "weight_decay": 0.05, "max_grad_norm": 1.0}
    assert_same_trajectory(
        lambda p: steepest.Adan(p, **kwargs, foreach=foreach),
        lambda p: ReferenceAdan(p, **kwargs, foreach=False),
        groups=_groups,
        rtol=1e-5,
        atol=1e-8,
    )


def test_clipping_leaves_grad_untouched() -> None:
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = steepest.Adan([w], max_grad_norm=1.0)
    w.grad = torch.tensor([30.0, 40.0])
    opt.step()
    assert torch.equal(w.grad, torch.tensor([30.0, 40.0]))
    assert torch.allclose(opt.state[w]["prev_grad"], torch.tensor([0.6, 0.8]))


def test_max_grad_norm_is_global() -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="max_grad_norm"):
        steepest.Adan([{"params": [a]}, {"params": [b], "max_grad_norm": 2.0}], max_grad_norm=1.0)
