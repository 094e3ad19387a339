"""Step-by-step comparison of two optimizers on the same gradient sequence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from tests.optim.problems import SHAPES, SumOfQuadratics


def _params(dtype: torch.dtype, seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [s for s in SHAPES if 0 not in s]
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(dtype)) for s in shapes]


def assert_same_trajectory(
    make_ours: Callable[[Any], torch.optim.Optimizer],
    make_theirs: Callable[[Any], torch.optim.Optimizer],
    *,
    steps: int = 40,
    rtol: float = 1e-12,
    atol: float = 1e-14,
    dtype: torch.dtype = torch.float64,
    noise: float = 0.3,
    groups: Callable[[list[torch.nn.Parameter]], Any] | None = None,
    create_graph: bool = False,
) -> float:
    """Run both optimizers on identical gradients (quadratic + shared noise); compare every step.

    Gradients are computed from each copy's own parameters, so the comparison is of the whole
    trajectory, not of one step from a common point. Returns the largest relative difference
    seen, and raises ``AssertionError`` at the first step that exceeds the tolerance.
    """
    problem = SumOfQuadratics()
    ours_params, theirs_params = _params(dtype), _params(dtype)
    ours = make_ours(groups(ours_params) if groups else ours_params)
    theirs = make_theirs(groups(theirs_params) if groups else theirs_params)
    gen = torch.Generator().manual_seed(1234)
    worst = 0.0
    for step in range(steps):
        noises = [noise * torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in ours_params]
        for params in (ours_params, theirs_params):
            for p in params:
                p.grad = None
            with torch.enable_grad():
                loss = problem_loss(problem, params) + sum(
                    (p.to(torch.float64) * n).sum() for p, n in zip(params, noises, strict=True)
                )
                loss.backward(create_graph=create_graph)
        ours.step()
        theirs.step()
        for i, (a, b) in enumerate(zip(ours_params, theirs_params, strict=True)):
            diff = (a.detach() - b.detach()).abs()
            limit = atol + rtol * b.detach().abs()
            rel = float((diff / (b.detach().abs() + atol)).max())
            worst = max(worst, rel)
            if not bool((diff <= limit).all()):
                raise AssertionError(
                    f"step {step + 1}, tensor {i}: max abs diff {float(diff.max()):.3e} "
                    f"exceeds atol={atol} rtol={rtol}"
                )
    return worst


def problem_loss(problem: SumOfQuadratics, params: list[Tensor]) -> Tensor:
    """The shared quadratic over the non-empty shapes."""
    shapes = [s for s in SHAPES if 0 not in s]
    index = [SHAPES.index(s) for s in shapes]
    total = torch.zeros((), dtype=torch.float64)
    for p, i in zip(params, index, strict=True):
        p64 = p.to(torch.float64)
        total = total + 0.5 * ((problem.weights[i] * (p64 - problem.targets[i])) ** 2).sum()
        total = total + 0.1 * p64.sum() ** 2 / p.numel()
    return total
