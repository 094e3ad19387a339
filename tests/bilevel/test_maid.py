"""MAID on a ridge hyperparameter problem: it lowers the outer loss, and its lower-level budget holds.

The problem: g(w, θ) = ½ mean((Xw − y)²) + ½ e^θ‖w‖² (log-parametrised ridge, so g stays strongly convex
in w for every θ), f(w) = ½ mean((X_v w − y_v)²), with noisy labels and n = 2d training points, starting
at a small ridge e^θ₀ = e⁻⁴. There the lower-level solve from w = 0 to MAID's first accuracy stops early
enough to score a lower validation loss than the exact ridge solution; the official code keeps that
early value as the line search's reference f(ỹ) and never accepts a step (36k lower-level steps in 6
iterations, the outer loss unchanged).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from steepest.bilevel import maid

DT = torch.float64


class _Problem:
    def __init__(self, n: int = 40, d: int = 20, n_val: int = 40, noise: float = 3.0, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        w_true = torch.randn(d, generator=gen, dtype=DT)
        self.X = torch.randn(n, d, generator=gen, dtype=DT)
        self.Xv = torch.randn(n_val, d, generator=gen, dtype=DT)
        self.y = self.X @ w_true + noise * torch.randn(n, generator=gen, dtype=DT)
        self.yv = self.Xv @ w_true + noise * torch.randn(n_val, generator=gen, dtype=DT)
        self.d = d
        self.g_calls = 0
        ev = torch.linalg.eigvalsh(self.X.T @ self.X / n)
        ev_val = torch.linalg.eigvalsh(self.Xv.T @ self.Xv / n_val)
        # μ: the ridge only adds curvature; the step 1/L is safe while e^θ ≤ 5 (θ goes from -4 to about -0.3)
        self.kwargs = {"mu": float(ev[0]), "inner_lr": 1 / (float(ev[-1]) + 5), "lipschitz_f": float(ev_val[-1])}

    def g(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        self.g_calls += 1
        return 0.5 * ((self.X @ w - self.y) ** 2).mean() + 0.5 * torch.exp(theta) * (w**2).sum()

    def f(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((self.Xv @ w - self.yv) ** 2).mean()

    def outer(self, theta: torch.Tensor) -> float:
        """F(θ) = f(w*(θ)) in closed form."""
        n = self.X.shape[0]
        A = self.X.T @ self.X / n + torch.exp(theta) * torch.eye(self.d, dtype=DT)
        return float(self.f(torch.linalg.solve(A, self.X.T @ self.y / n), theta))

    def run(self, **kw):
        return maid(self.f, self.g, torch.zeros(self.d, dtype=DT), torch.tensor(-4.0, dtype=DT), **self.kwargs, **kw)


def test_maid_lowers_the_ridge_validation_loss():
    prob = _Problem()
    theta0 = torch.tensor(-4.0, dtype=DT)
    grid = torch.linspace(-6.0, 3.0, 901, dtype=DT)
    values = torch.tensor([prob.outer(t) for t in grid], dtype=DT)
    best, theta_best = float(values.min()), float(grid[values.argmin()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = prob.run(max_iter=15)
    accepted = [h for h in out.history if h["step"] > 0]
    assert len(accepted) >= 12
    # the exact outer loss went down to its minimum over θ (10.34 -> 5.54 here)
    f0, f1 = prob.outer(theta0), prob.outer(out.x)
    assert f1 - best < 0.01 * (f0 - best)
    assert abs(float(out.x) - theta_best) < 0.1
    # the recorded values are f at the accepted lower-level points, close to the exact F there
    assert abs(out.history[-1]["outer_value"] - f1) < 0.05
    assert not out.budget_exhausted
    assert out.inner_steps == out.history[-1]["inner_steps"] < 5000


def test_maid_stops_at_its_lower_level_budget():
    full = _Problem().run(max_iter=8)
    prob = _Problem()
    budget = 600
    assert full.inner_steps > 2 * budget
    with pytest.warns(RuntimeWarning, match="max_lower_steps=600 ran out"):
        out = prob.run(max_iter=8, max_lower_steps=budget)
    assert out.budget_exhausted
    assert out.inner_steps == budget
    # counted independently: every lower-level step evaluates g once; the rest of MAID's g evaluations
    # (one tolerance check per solve, a handful per hypergradient) are far fewer than the steps saved
    assert budget <= prob.g_calls < budget + 200
    # the run stopped inside an iteration and returned the last accepted point: the full run's after
    # the same number of completed iterations
    done = len(out.history)
    assert 1 <= done < 8
    same = _Problem().run(max_iter=done)
    assert torch.equal(out.x, same.x) and torch.equal(out.y, same.y)
    assert out.history == same.history


def test_maid_budget_not_reached_changes_nothing():
    full = _Problem().run(max_iter=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _Problem().run(max_iter=4, max_lower_steps=full.inner_steps)
    assert not out.budget_exhausted
    assert torch.equal(out.x, full.x) and out.history == full.history


def test_maid_budget_in_the_first_solve():
    with pytest.warns(RuntimeWarning, match="after 0 outer iterations"):
        out = _Problem().run(max_iter=3, max_lower_steps=5)
    assert out.budget_exhausted and out.inner_steps == 5 and out.history == []
    assert float(out.x) == -4.0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_maid_rejects_a_bad_budget(bad):
    prob = _Problem()
    with pytest.raises(ValueError, match="max_lower_steps"):
        prob.run(max_lower_steps=bad)


@pytest.mark.parametrize(("name", "bad"), [("max_bt_loop", 0), ("max_shrink", 0), ("max_iter", -1), ("max_inner", 0)])
def test_maid_rejects_bad_iteration_caps(name, bad):
    with pytest.raises(ValueError, match=name):
        _Problem().run(**{name: bad})
