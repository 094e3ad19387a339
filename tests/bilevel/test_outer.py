"""Outer loops: penalty method (§29 toy), BO-REP (§30 properties), MAID (§31 quadratic), run_bilevel API."""

from __future__ import annotations

import itertools

import pytest
import torch

import steepest
from steepest.bilevel import (
    AID,
    BOREP,
    ITD,
    InnerLoop,
    Penalty,
    maid,
    penalty_hypergrad,
    power_sigma_schedule,
    run_bilevel,
)
from tests.bilevel.problems import DT, make_ridge, perfeature_ridge_closed_form, perfeature_ridge_inner, validation_loss


def _penalty_toy(seed: int = 0):
    """Toy: f = ½‖y − a‖² + ½‖x‖², g = ½‖y − Bx‖²: y_σ = (σa + Bx)/(1+σ), z* = Bx, F(x) = ½‖Bx − a‖² + ½‖x‖²."""
    gen = torch.Generator().manual_seed(seed)
    B = torch.randn(6, 3, generator=gen, dtype=DT) / 6**0.5
    a = torch.randn(6, generator=gen, dtype=DT)

    def f(y, x):
        return 0.5 * ((y - a) ** 2).sum() + 0.5 * (x**2).sum()

    def g(y, x):
        return 0.5 * ((y - B @ x) ** 2).sum()

    eye = torch.eye(3, dtype=DT)
    x_star = torch.linalg.solve(B.T @ B + eye, B.T @ a)

    def x_sigma(sigma: float) -> torch.Tensor:  # stationary point of ψ_σ: x + Bᵀ(Bx − a)/(1+σ) = 0
        return torch.linalg.solve(B.T @ B / (1 + sigma) + eye, B.T @ a / (1 + sigma))

    return f, g, B, a, x_star, x_sigma


def test_penalty_gradient_matches_exact_formula():
    f, g, B, a, _, _ = _penalty_toy()
    x = torch.randn(3, dtype=DT)
    for sigma in (1.0, 0.1, 0.01):
        y_sigma, z = (sigma * a + B @ x) / (1 + sigma), B @ x
        got = penalty_hypergrad(f, g, y_sigma, z, x, sigma)
        want = x + B.T @ (B @ x - a) / (1 + sigma)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        exact = x + B.T @ (B @ x - a)
        err = torch.linalg.vector_norm(got - exact)
        assert float(err) == pytest.approx(sigma / (1 + sigma) * float(torch.linalg.vector_norm(B.T @ (B @ x - a))))


def _run_penalty(sigma, outer_steps=60):
    f, g, B, *_ = _penalty_toy()
    x = torch.zeros(3, dtype=DT, requires_grad=True)
    lipschitz = 1 + float(torch.linalg.eigvalsh(B.T @ B)[-1])  # of ∇F and of every ∇ψ_σ
    opt = torch.optim.SGD([x], lr=1 / lipschitz)
    run = run_bilevel(f, g, torch.zeros(6, dtype=DT), x, opt, Penalty(sigma=sigma),
                      inner=InnerLoop(lr=0.9, steps=5), outer_steps=outer_steps)  # fmt: skip
    return x.detach(), run


def test_penalty_solution_approaches_bilevel_solution_as_sigma_shrinks():
    *_, x_star, x_sigma = _penalty_toy()
    dists = []
    for sigma in (1.0, 0.1, 0.01):
        x, run = _run_penalty(sigma)
        torch.testing.assert_close(x, x_sigma(sigma), rtol=1e-7, atol=1e-7)  # the penalty problem is solved
        assert all(h["sigma"] == sigma for h in run.history)
        dists.append(float(torch.linalg.vector_norm(x - x_star)))
    assert all(d1 > d2 for d1, d2 in itertools.pairwise(dists))
    assert dists[-1] < 0.02 * dists[0]  # O(σ): σ 100x smaller → distance ~100x smaller


def test_penalty_with_decreasing_sigma_schedule_reaches_bilevel_solution():
    *_, x_star, _ = _penalty_toy()
    x, run = _run_penalty(power_sigma_schedule(1.0, power=2.0, sigma_min=1e-4), outer_steps=150)
    assert run.history[-1]["sigma"] == pytest.approx(1e-4)
    assert float(torch.linalg.vector_norm(x - x_star)) < 1e-3


def test_run_bilevel_aid_and_itd_reach_the_ridge_optimum_with_a_steepest_optimizer():
    """Per-feature ridge penalties, parameterized as exp(θ) in a dict, tuned by steepest's AdamW."""
    data = make_ridge(n=40, d=4, n_val=30, seed=3)
    g_raw, f_raw = perfeature_ridge_inner(data), validation_loss(data)

    def g(w, x):
        return g_raw(w, x["log_lam"].exp())

    def f(w, x):
        return f_raw(w, x["log_lam"].exp())

    def F(log_lam):
        w, _ = perfeature_ridge_closed_form(data, log_lam.exp())
        return f_raw(w, None)

    best = torch.zeros(4, dtype=DT, requires_grad=True)  # F's minimum, by autograd through the direct solve
    lbfgs = torch.optim.LBFGS([best], max_iter=200, line_search_fn="strong_wolfe", tolerance_grad=1e-12)

    def closure():
        lbfgs.zero_grad()
        loss = F(best)
        loss.backward()
        return loss

    lbfgs.step(closure)
    f_star, f_zero = float(F(best.detach())), float(F(torch.zeros(4, dtype=DT)))

    results = {}
    for name, method in (("aid", AID()), ("itd", ITD())):
        x = {"log_lam": torch.zeros(4, dtype=DT, requires_grad=True)}
        opt = steepest.create_optimizer("adamw", list(x.values()), lr=0.1, weight_decay=0.0)
        run = run_bilevel(f, g, torch.zeros(4, dtype=DT), x, opt, method,
                          inner=InnerLoop(lr=0.01, steps=20), outer_steps=60)  # fmt: skip
        results[name] = x["log_lam"].detach()
        assert run.history[-1]["outer_value"] < run.history[0]["outer_value"]
        assert float(F(x["log_lam"].detach())) - f_star < 0.05 * (f_zero - f_star), name


def test_run_bilevel_validates_inputs():
    f, g, *_ = _penalty_toy()
    x = torch.zeros(3, dtype=DT, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.1)
    with pytest.raises(ValueError, match="period"):
        run_bilevel(f, g, torch.zeros(6, dtype=DT), x, opt, ITD(), inner=InnerLoop(lr=0.5, period=2), outer_steps=1)
    with pytest.raises(ValueError):
        InnerLoop(lr=0.0)
    with pytest.raises(TypeError):
        run_bilevel(f, g, torch.zeros(6, dtype=DT), x, opt, "aid", inner=InnerLoop(lr=0.5), outer_steps=1)  # type: ignore[arg-type]
    frozen = torch.zeros(3, dtype=DT)
    with pytest.raises(ValueError, match="requires_grad"):
        run_bilevel(f, g, torch.zeros(6, dtype=DT), frozen, torch.optim.SGD([x], lr=0.1), AID(),
                    inner=InnerLoop(lr=0.5), outer_steps=1)  # fmt: skip


def test_borep_moves_exactly_eta_and_uses_periodic_inner_updates():
    f, g, _, _, x_star, _ = _penalty_toy()
    x = torch.zeros(3, dtype=DT, requires_grad=True)
    eta = 0.01
    opt = torch.optim.SGD([x], lr=eta)
    positions = [x.detach().clone()]
    inner_points = []

    def record(k, x_, y, info):
        positions.append(x_.detach().clone())
        inner_points.append(y.clone())

    run_bilevel(f, g, torch.zeros(6, dtype=DT), x, opt, BOREP(z_lr=0.5, beta=0.9),
                inner=InnerLoop(lr=0.5, steps=5, period=3, refine_steps=50), outer_steps=300,
                callback=record)  # fmt: skip
    steps = torch.stack([torch.linalg.vector_norm(p1 - p0) for p0, p1 in itertools.pairwise(positions)])
    torch.testing.assert_close(steps, torch.full_like(steps, eta), rtol=1e-6, atol=0)  # ‖x_{t+1} − x_t‖ = η
    # y is frozen between periodic updates (outer steps 1, 2 reuse step 0's inner point)
    assert torch.equal(inner_points[0], inner_points[1]) and torch.equal(inner_points[1], inner_points[2])
    assert not torch.equal(inner_points[2], inner_points[3])
    # refinement made the first inner point accurate: y*(x₀) = B x₀ = 0
    assert float(torch.linalg.vector_norm(inner_points[0])) < 1e-10
    # normalized steps of size η end within a few η of x*
    assert float(torch.linalg.vector_norm(x.detach() - x_star)) < 5 * eta


def test_maid_solves_the_quadratic_oracle():
    """MAID's Quadratic.py problem, small: f = ½‖A₁y − b₁‖², g = ½‖A₂y + A₃θ − b₂‖²."""
    gen = torch.Generator().manual_seed(0)
    n, m = 20, 4
    A1, A2 = torch.randn(n, n, generator=gen, dtype=DT) / n**0.5, torch.randn(n, n, generator=gen, dtype=DT) / n**0.5
    A2 = 0.5 * A2 + 2 * torch.eye(n, dtype=DT)  # condition number of A₂ᵀA₂ about 10
    A3 = torch.randn(n, m, generator=gen, dtype=DT)
    b1, b2 = torch.randn(n, generator=gen, dtype=DT), torch.randn(n, generator=gen, dtype=DT)

    def f(y, theta):
        return 0.5 * ((A1 @ y - b1) ** 2).sum()

    def g(y, theta):
        return 0.5 * ((A2 @ y + A3 @ theta - b2) ** 2).sum()

    P = torch.linalg.solve(A2.T @ A2, A2.T)
    M, c = -A1 @ P @ A3, A1 @ P @ b2 - b1  # F(θ) = ½‖Mθ + c‖²
    theta_star = torch.linalg.lstsq(M, -c).solution

    def F(theta):
        return float(0.5 * ((M @ theta + c) ** 2).sum())

    ev = torch.linalg.eigvalsh(A2.T @ A2)
    lf = float(torch.linalg.eigvalsh(A1.T @ A1)[-1])
    theta0 = torch.zeros(m, dtype=DT)
    out = maid(f, g, torch.zeros(n, dtype=DT), theta0, mu=float(ev[0]), inner_lr=1 / float(ev[-1]),
               lipschitz_f=lf, max_iter=12)  # fmt: skip
    gap0, gap = F(theta0) - F(theta_star), F(out.x) - F(theta_star)
    assert gap < 1e-4 * gap0
    accepted = [h for h in out.history if h["step"] > 0]
    assert len(accepted) >= 10
    # the accuracies are chosen so that the error bound stays below (1 − η)‖p‖ ...
    assert all(h["bound"] <= (1 - 1e-4) * h["grad_norm"] for h in accepted)
    # ... which forces ε down as the hypergradient shrinks near the solution
    eps = [h["epsilon"] for h in out.history]
    assert eps[-1] < 1e-3 * eps[0]
    assert out.history[-1]["grad_norm"] < 1e-2 * out.history[0]["grad_norm"]


def test_borep_estimate_converges_to_closed_form_hypergradient():
    """§30 oracle: with I = 1, an exact inner solve and β = 0, BO-REP's ĝ tends to the closed form (x frozen)."""
    data = make_ridge()
    g, f = perfeature_ridge_inner(data), validation_loss(data)
    lam = torch.linspace(0.5, 4.0, data.X.shape[1], dtype=DT)
    _, h_star = perfeature_ridge_closed_form(data, lam)
    l_max = float(torch.linalg.eigvalsh(data.X.T @ data.X + torch.diag(lam))[-1])
    x = lam.clone().requires_grad_()
    frozen = torch.optim.SGD([x], lr=0.0)  # the estimate is left in x.grad after each step
    method = BOREP(z_lr=1 / l_max, beta=0.0, normalize=False)
    run_bilevel(f, g, torch.zeros(data.X.shape[1], dtype=DT), x, frozen, method,
                inner=InnerLoop(lr=1 / l_max, steps=5, refine_steps=200), outer_steps=80)  # fmt: skip
    assert x.grad is not None
    torch.testing.assert_close(x.grad, h_star, rtol=1e-6, atol=0)
