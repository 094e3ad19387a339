"""The O(n log n) 1-norm steepest-descent rule against a brute-force QP solve (scipy SLSQP)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from steepest.coordinate import l1_subproblem_value, steepest_l1_direction


def _instance(rng: np.random.Generator, n: int, unbounded: bool = False):
    lower = rng.uniform(-1.0, 0.0, n)
    upper = lower + rng.uniform(0.0, 1.0, n)
    if unbounded:
        lower[:], upper[:] = -np.inf, np.inf
        x = rng.normal(size=n)
    else:
        # Put some coordinates exactly on a bound, as in an SVM dual.
        t = rng.uniform(size=n)
        t[rng.uniform(size=n) < 0.3] = 0.0
        t[rng.uniform(size=n) < 0.2] = 1.0
        x = lower + t * (upper - lower)
    g = rng.normal(size=n) * rng.choice([0.1, 1.0, 10.0])
    lip = float(rng.choice([0.1, 1.0, 5.0]))
    return g, x, lower, upper, lip


def _brute_force(g, x, lower, upper, lip) -> float:
    """Brute force: min g'(p - q) + L/2 (1'p + 1'q)^2 s.t. 1'p = 1'q, 0 <= p <= u - x, 0 <= q <= x - l (SLSQP)."""
    n = g.size
    bounds = [(0.0, u - xi) for u, xi in zip(upper, x, strict=True)]
    bounds += [(0.0, xi - lo) for lo, xi in zip(lower, x, strict=True)]

    def fun(v):
        p, q = v[:n], v[n:]
        s = p.sum() + q.sum()
        return g @ (p - q) + 0.5 * lip * s * s, np.concatenate([g + lip * s, -g + lip * s])

    cons = {"type": "eq", "fun": lambda v: v[:n].sum() - v[n:].sum(), "jac": lambda v: np.r_[np.ones(n), -np.ones(n)]}
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    best = 0.0  # p = q = 0 is feasible
    for start in (np.zeros(2 * n), np.full(2 * n, 1e-3)):
        start = np.clip(start, [b[0] for b in bounds], [b[1] for b in bounds])
        res = minimize(
            fun,
            start,
            jac=True,
            bounds=bounds,
            constraints=[cons],
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        # SLSQP can stop at an infeasible point (seen with scipy 1.17.1 / numpy 2.4 on a problem whose only
        # feasible point is 0): a result counts only if it satisfies the constraints.
        v = res.x
        feasible = abs(v[:n].sum() - v[n:].sum()) <= 1e-9 and bool(np.all(v >= lo - 1e-12) and np.all(v <= hi + 1e-12))
        if feasible:
            best = min(best, float(fun(v)[0]))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_matches_brute_force_qp(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 9))
    g, x, lower, upper, lip = _instance(rng, n)
    t = [torch.tensor(a) for a in (g, x, lower, upper)]
    idx, val = steepest_l1_direction(*t, lip)
    d = torch.zeros(n, dtype=torch.float64).index_add_(0, idx, val)
    # feasible: sum zero, inside the box
    assert abs(float(d.sum())) < 1e-12
    assert bool((t[1] + d >= t[2] - 1e-12).all()) and bool((t[1] + d <= t[3] + 1e-12).all())
    ours = l1_subproblem_value(t[0], val, idx, lip)
    ref = _brute_force(g, x, lower, upper, lip)
    assert ours <= ref + 1e-9 * max(1.0, abs(ref)), (ours, ref)
    assert ours >= ref - 1e-7 * max(1.0, abs(ref)), (ours, ref)  # SLSQP is the oracle: we cannot beat it by much


def test_large_instance_uses_more_than_two_coordinates_and_beats_pairs() -> None:
    """Tight bounds block the maximal violating pair; the 1-norm rule moves mass through many coordinates."""
    rng = np.random.default_rng(0)
    n = 500
    lower, upper = np.zeros(n), np.full(n, 1e-3)
    x = np.where(rng.uniform(size=n) < 0.5, 0.0, 1e-3 - 1e-6)
    g = rng.normal(size=n)
    t = [torch.tensor(a) for a in (g, x, lower, upper)]
    idx, val = steepest_l1_direction(*t, 0.01)
    assert idx.numel() > 2
    sd_value = l1_subproblem_value(t[0], val, idx, 0.01)
    # the maximal violating pair with the best step the bounds allow
    down, up = x > lower, x < upper
    i = int(np.argmax(np.where(down, g, -np.inf)))
    j = int(np.argmin(np.where(up, g, np.inf)))
    delta = min((g[i] - g[j]) / (4 * 0.01), x[i] - lower[i], upper[j] - x[j])
    pair_value = -(g[i] - g[j]) * delta + 0.5 * 0.01 * (2 * delta) ** 2
    assert sd_value < 10 * pair_value < 0  # far more progress than the blocked pair


def test_unbounded_is_the_greedy_pair() -> None:
    rng = np.random.default_rng(1)
    g, x, lower, upper, lip = _instance(rng, 50, unbounded=True)
    idx, val = steepest_l1_direction(*[torch.tensor(a) for a in (g, x, lower, upper)], lip)
    assert idx.tolist() == [int(np.argmax(g)), int(np.argmin(g))]
    delta = (g.max() - g.min()) / (4 * lip)
    torch.testing.assert_close(val, torch.tensor([-delta, delta], dtype=torch.float64))
    # guaranteed decrease of the model: (g_i - g_j)^2 / (8 L1)
    value = l1_subproblem_value(torch.tensor(g), val, idx, lip)
    assert value == pytest.approx(-((g.max() - g.min()) ** 2) / (8 * lip))


def test_optimal_point_gives_empty_direction() -> None:
    g = torch.tensor([1.0, 2.0, 3.0])
    x = torch.tensor([0.0, 0.0, 0.0])
    # only coordinate 0 can decrease... no: all sit at the lower bound, nothing can decrease
    idx, val = steepest_l1_direction(g, x, torch.zeros(3), torch.ones(3), 1.0)
    assert idx.numel() == 0 and val.numel() == 0
    with pytest.raises(ValueError, match="positive"):
        steepest_l1_direction(g, x, torch.zeros(3), torch.ones(3), 0.0)
