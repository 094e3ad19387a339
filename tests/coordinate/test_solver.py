"""The sum-constrained coordinate solver: oracles (KKT solve, simplex projection, brute-force pair steps)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from steepest.coordinate import (
    SELECTIONS,
    ConvergenceWarning,
    QuadraticObjective,
    SmoothObjective,
    minimize_sum_constrained,
)

DT = torch.float64


def _quadratic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=DT)
    return A @ A.T / n + 0.1 * torch.eye(n, dtype=DT), torch.randn(n, generator=g, dtype=DT)


def _kkt_solution(Q: torch.Tensor, p: torch.Tensor, c: float) -> torch.Tensor:
    n = Q.shape[0]
    K = torch.zeros(n + 1, n + 1, dtype=DT)
    K[:n, :n], K[:n, n], K[n, :n] = Q, 1.0, 1.0
    return torch.linalg.solve(K, torch.cat([-p, torch.tensor([c], dtype=DT)]))[:n]


def _simplex_projection(y: torch.Tensor) -> torch.Tensor:
    """Sort-based Euclidean projection onto {x >= 0, sum x = 1} (Duchi et al. 2008)."""
    u = torch.sort(y, descending=True).values
    css = torch.cumsum(u, 0) - 1.0
    k = torch.arange(1, y.numel() + 1, dtype=y.dtype)
    rho = int(torch.nonzero(u - css / k > 0).max())
    return torch.clamp(y - css[rho] / (rho + 1), min=0.0)


@pytest.mark.parametrize("selection", SELECTIONS)
def test_sum_constrained_quadratic_matches_kkt_solve(selection: str) -> None:
    Q, p = _quadratic(30, 0)
    x0 = torch.linspace(-1, 1, 30, dtype=DT) + 0.5  # sum 15
    res = minimize_sum_constrained(QuadraticObjective(Q, p), x0, selection=selection, tol=1e-9, max_iter=200_000)
    assert res.converged and res.violation <= 1e-9
    torch.testing.assert_close(res.x, _kkt_solution(Q, p, 15.0), atol=1e-7, rtol=0)
    assert float(res.x.sum()) == pytest.approx(15.0, abs=1e-11)


@pytest.mark.parametrize("selection", SELECTIONS)
def test_simplex_projection(selection: str) -> None:
    y = torch.randn(40, generator=torch.Generator().manual_seed(3), dtype=DT)
    f = QuadraticObjective(torch.eye(40, dtype=DT), -y)  # 1/2|x - y|^2 up to a constant
    x0 = torch.full((40,), 1 / 40, dtype=DT)
    res = minimize_sum_constrained(f, x0, lower=0.0, selection=selection, tol=1e-10, max_iter=200_000)
    torch.testing.assert_close(res.x, _simplex_projection(y), atol=1e-9, rtol=0)
    assert bool((res.x >= 0).all())


@pytest.mark.parametrize("seed", range(5))
def test_exact_pair_step_matches_brute_force(seed: int) -> None:
    """One mvp iteration = the exact minimiser of f along e_j - e_i inside the box (scalar brute force)."""
    Q, p = _quadratic(8, seed)
    lower, upper = -0.3 * torch.ones(8, dtype=DT), 0.4 * torch.ones(8, dtype=DT)
    x0 = torch.tensor([0.1, -0.3, 0.4, 0.0, 0.2, -0.1, 0.4, -0.3], dtype=DT)
    f = QuadraticObjective(Q, p)
    g = f.gradient(x0)
    down, up = x0 > lower, x0 < upper
    i = int(torch.argmax(torch.where(down, g, -math.inf)))
    j = int(torch.argmin(torch.where(up, g, math.inf)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = minimize_sum_constrained(f, x0, lower=lower, upper=upper, selection="mvp", max_iter=1, tol=1e-12)
    moved = torch.nonzero(res.x != x0).flatten().tolist()
    assert sorted(moved) == sorted([i, j])

    def along(delta: float) -> float:
        x = x0.clone()
        x[i] -= delta
        x[j] += delta
        return float(f.value(x))

    hi = min(float(x0[i] - lower[i]), float(upper[j] - x0[j]))
    lo = -min(float(upper[i] - x0[i]), float(x0[j] - lower[j]))
    grid = np.linspace(lo, hi, 1001)
    best_grid = min(along(float(d)) for d in grid)
    scalar = minimize_scalar(along, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
    best = min(best_grid, float(scalar.fun))
    assert res.objective <= best + 1e-12
    assert res.objective == pytest.approx(best, abs=1e-9)


def test_properties_sum_bounds_monotone() -> None:
    Q, p = _quadratic(60, 1)
    lower, upper = -torch.rand(60, dtype=DT), torch.rand(60, dtype=DT)
    x0 = torch.zeros(60, dtype=DT)
    for selection in SELECTIONS:
        res = minimize_sum_constrained(
            QuadraticObjective(Q, p),
            x0,
            lower=lower,
            upper=upper,
            selection=selection,
            tol=1e-6,
            max_iter=100_000,
            record=True,
        )
        hist = torch.tensor(res.history)
        assert bool((hist[1:] <= hist[:-1] + 1e-12).all()), selection  # f monotone
        assert abs(float(res.x.sum())) < 1e-12
        assert bool((res.x >= lower).all() and (res.x <= upper).all())
        assert res.converged


def test_lipschitz_step_meets_guaranteed_decrease_on_nonquadratic() -> None:
    """Greedy pair with delta = (g_i - g_j)/(4 L1) decreases f by at least (g_i - g_j)^2 / (8 L1)."""
    gen = torch.Generator().manual_seed(0)
    n = 25
    a = torch.randn(n, generator=gen, dtype=DT) * 2
    B = torch.randn(n, n, generator=gen, dtype=DT) / n
    Q = B @ B.T

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(a * x).sum() + 0.5 * x @ Q @ x - x[0]

    lip = float((a**2).max() / 4 + Q.diagonal().max())  # bounds max_ij |H_ij|
    f = SmoothObjective(fn)
    x = torch.zeros(n, dtype=DT)
    for _ in range(15):
        g = f.gradient(x)
        gap = float(g.max() - g.min())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = minimize_sum_constrained(f, x, lipschitz=lip, max_iter=1, tol=1e-12)
        assert res.objective <= float(f.value(x)) - gap**2 / (8 * lip) + 1e-12
        x = res.x
    assert abs(float(x.sum())) < 1e-12
    # a plain callable works too, and the KKT violation keeps falling
    g0 = f.gradient(torch.zeros(n, dtype=DT))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        done = minimize_sum_constrained(fn, torch.zeros(n, dtype=DT), lipschitz=lip, tol=1e-12, max_iter=1_000)
    assert done.violation < 0.1 * float(g0.max() - g0.min())


def test_greedy_needs_far_fewer_iterations_than_random_and_the_gap_grows_with_n() -> None:
    """Simplex projection from the uniform point: the paper's claim on a problem with bounds."""
    ratios = []
    for n in (50, 100):
        y = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=DT)
        f = QuadraticObjective(torch.eye(n, dtype=DT), -y)
        x0 = torch.full((n,), 1 / n, dtype=DT)
        greedy = minimize_sum_constrained(f, x0, lower=0.0, selection="greedy", tol=1e-6)
        random = minimize_sum_constrained(f, x0, lower=0.0, selection="random", tol=1e-6, max_iter=100_000)
        assert greedy.converged and random.converged
        assert random.n_iter > 20 * greedy.n_iter
        ratios.append(random.n_iter / greedy.n_iter)
    assert ratios[1] > 1.5 * ratios[0]


def test_errors() -> None:
    Q, p = _quadratic(4, 0)
    f = QuadraticObjective(Q, p)
    x0 = torch.zeros(4, dtype=DT)
    with pytest.raises(ValueError, match="selection"):
        minimize_sum_constrained(f, x0, selection="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tol"):
        minimize_sum_constrained(f, x0, tol=0.0)
    with pytest.raises(ValueError, match="bounds"):
        minimize_sum_constrained(f, x0, lower=0.5)
    with pytest.raises(ValueError, match="lipschitz"):
        minimize_sum_constrained(lambda x: (x**2).sum(), x0)
    with pytest.raises(ValueError, match="wss2"):
        minimize_sum_constrained(lambda x: (x**2).sum(), x0, selection="wss2", lipschitz=2.0)
    with pytest.raises(ValueError, match="exact"):
        minimize_sum_constrained(lambda x: (x**2).sum(), x0, step="exact", lipschitz=2.0)
    with pytest.raises(ValueError, match="square"):
        QuadraticObjective(torch.zeros(3, 2), torch.zeros(3))
    with pytest.warns(ConvergenceWarning):
        minimize_sum_constrained(f, x0, max_iter=1, tol=1e-12)
