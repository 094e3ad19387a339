"""Hypergradients against closed forms (ridge, §33) and finite differences (logistic inner problem)."""

from __future__ import annotations

import pytest
import torch

from steepest.bilevel import aid_hypergrad, conjugate_gradient, inner_gradient_descent, itd_hypergrad
from tests.bilevel.problems import (
    DT,
    hessian_extremes,
    make_ridge,
    perfeature_ridge_closed_form,
    perfeature_ridge_inner,
    scalar_ridge_closed_form,
    scalar_ridge_inner,
    validation_loss,
)

RTOL = 1e-6


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.fixture(scope="module")
def data():
    return make_ridge()


def _problems(data):
    """(name, g, x, closed-form w*, closed-form hypergradient, λ_min, λ_max) for both ridge variants."""
    n = data.X.shape[0]
    lam_s = torch.tensor(0.3, dtype=DT)
    w_s, h_s = scalar_ridge_closed_form(data, 0.3)
    lam_p = torch.linspace(0.5, 4.0, data.X.shape[1], dtype=DT)
    w_p, h_p = perfeature_ridge_closed_form(data, lam_p)
    return [
        ("scalar", scalar_ridge_inner(data), lam_s, w_s, h_s, *hessian_extremes(data, 0.3, 1.0 / n)),
        ("per-feature", perfeature_ridge_inner(data), lam_p, w_p, h_p, *hessian_extremes(data, lam_p, 1.0)),
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["scalar", "per-feature"])
def test_aid_cg_matches_closed_form(data, which):
    _, g, lam, w_star, h_star, _, l_max = _problems(data)[which]
    f = validation_loss(data)
    w = inner_gradient_descent(g, torch.zeros_like(w_star), lam, lr=1.0 / l_max, steps=5000, tol=1e-13).y
    assert rel_err(w, w_star) < 1e-10
    out = aid_hypergrad(f, g, w, lam, solver="cg", tol=1e-12, max_iter=50)
    assert rel_err(out.grad, h_star) < RTOL
    assert out.residual_norm is not None and out.residual_norm <= 1e-12
    assert out.hvps <= w_star.numel() + 1  # CG is exact in d steps in exact arithmetic


@pytest.mark.parametrize("which", [0, 1], ids=["scalar", "per-feature"])
def test_aid_neumann_matches_closed_form_with_enough_terms(data, which):
    _, g, lam, w_star, h_star, _, l_max = _problems(data)[which]
    f = validation_loss(data)
    step = 1.0 / l_max
    errors = [rel_err(aid_hypergrad(f, g, w_star, lam, solver="neumann", neumann_step=step, neumann_terms=k).grad,
                      h_star) for k in (5, 50, 3000)]  # fmt: skip
    assert errors[2] < RTOL
    assert errors[0] > errors[1] > errors[2]  # the truncation error shrinks with the number of terms
    assert errors[0] > 1e-3  # the truncation error (I − ηH)^{K+1} H⁻¹ b is far from negligible at K = 5


def test_neumann_without_step_is_a_clear_error(data):
    _, g, lam, w_star, *_ = _problems(data)[0]
    with pytest.raises(ValueError, match="neumann_step"):
        aid_hypergrad(validation_loss(data), g, w_star, lam, solver="neumann")
    with pytest.raises(ValueError, match="solver"):
        aid_hypergrad(validation_loss(data), g, w_star, lam, solver="lu")  # type: ignore[arg-type]


@pytest.mark.parametrize("which", [0, 1], ids=["scalar", "per-feature"])
def test_itd_long_unroll_matches_closed_form(data, which):
    _, g, lam, w_star, h_star, l_min, l_max = _problems(data)[which]
    f = validation_loss(data)
    lr = 1.0 / l_max
    steps = int(40 / (lr * l_min)) + 1  # contraction (1 − ηµ)^T ≈ e^{-40}
    out = itd_hypergrad(f, g, torch.zeros_like(w_star), lam, lr=lr, steps=steps)
    assert rel_err(out.grad, h_star) < RTOL
    short = itd_hypergrad(f, g, torch.zeros_like(w_star), lam, lr=lr, steps=5)
    assert rel_err(short.grad, h_star) > 1e-3  # a short unroll is biased: the test can fail


def test_itd_truncation_bias_decays_with_kept_steps(data):
    _, g, lam, w_star, h_star, l_min, l_max = _problems(data)[1]
    f = validation_loss(data)
    lr = 1.0 / l_max
    steps = int(40 / (lr * l_min)) + 1
    errs = [rel_err(itd_hypergrad(f, g, torch.zeros_like(w_star), lam, lr=lr, steps=steps, truncate=k).grad, h_star)
            for k in (0, 3, 10, 30, steps)]  # fmt: skip
    assert errs[0] == pytest.approx(1.0)  # K = 0 keeps only ∇_λ f = 0
    assert errs[0] > errs[1] > errs[2] > errs[3] > errs[4]
    assert errs[3] < 10 * (1 - lr * l_min) ** 30  # bias ~ (1 − ηµ)^K (Shaban et al.)
    assert errs[4] < RTOL


def test_itd_exact_for_the_unrolled_map(data):
    """ITD is the exact derivative of λ ↦ f(w_T(λ)): compare with a central finite difference (T = 7)."""
    _, g, lam, w_star, *_ = _problems(data)[1]
    f = validation_loss(data)
    w0 = torch.zeros_like(w_star)

    def unrolled_loss(lam_):
        w = inner_gradient_descent(g, w0, lam_, lr=0.002, steps=7).y
        return f(w, lam_)

    out = itd_hypergrad(f, g, w0, lam, lr=0.002, steps=7)
    eps = 1e-6
    fd = torch.stack([(unrolled_loss(lam + eps * e) - unrolled_loss(lam - eps * e)) / (2 * eps)
                      for e in torch.eye(lam.numel(), dtype=DT)])  # fmt: skip
    assert rel_err(out.grad, fd) < 1e-7


def _logistic_problem():
    """Logistic inner problem with a dict of hyperparameters: per-feature log-L2 and a scalar bias L2."""
    gen = torch.Generator().manual_seed(1)
    n, d = 60, 4
    X = torch.randn(n, d, generator=gen, dtype=DT)
    labels = X @ torch.randn(d, generator=gen, dtype=DT) + 0.3 * torch.randn(n, generator=gen, dtype=DT) > 0
    Xv = torch.randn(40, d, generator=gen, dtype=DT)
    lv = (Xv @ torch.ones(d, dtype=DT) > 0).to(DT)
    t = labels.to(DT)

    def g(y, x):
        logits = X @ y["w"] + y["b"]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, t)
        return loss + 0.5 * (x["log_l2"].exp() * y["w"] ** 2).sum() + 0.5 * x["bias_l2"] * y["b"] ** 2

    def f(y, x):
        return torch.nn.functional.binary_cross_entropy_with_logits(Xv @ y["w"] + y["b"], lv)

    x = {"log_l2": torch.tensor([-1.0, -2.0, 0.0, -0.5], dtype=DT), "bias_l2": torch.tensor(0.2, dtype=DT)}
    y0 = {"w": torch.zeros(d, dtype=DT), "b": torch.tensor(0.0, dtype=DT)}
    return f, g, x, y0


def _newton_solve(g, y0, x, iters=12):
    """Exact inner solution by Newton's method on the flattened (w, b), with plain autograd."""
    d = y0["w"].numel()
    z = torch.cat([y0["w"], y0["b"].reshape(1)])
    for _ in range(iters):
        zz = z.clone().requires_grad_()
        (grad,) = torch.autograd.grad(g({"w": zz[:d], "b": zz[d]}, x), zz, create_graph=True)
        hess = torch.stack([torch.autograd.grad(grad[i], zz, retain_graph=True)[0] for i in range(d + 1)])
        z = (z - torch.linalg.solve(hess, grad)).detach()
    return {"w": z[:d], "b": z[d]}


def test_aid_and_itd_match_finite_differences_on_logistic_inner():
    f, g, x, y0 = _logistic_problem()

    def F(x_):
        return float(f(_newton_solve(g, y0, x_), x_))

    eps = 1e-5
    fd = {}
    for key, val in x.items():
        col = []
        for i in range(val.numel()):
            e = torch.zeros_like(val).reshape(-1)
            e[i] = eps
            e = e.reshape(val.shape)
            col.append((F({**x, key: val + e}) - F({**x, key: val - e})) / (2 * eps))
        fd[key] = torch.tensor(col, dtype=DT).reshape(val.shape)
    y_star = _newton_solve(g, y0, x)
    aid = aid_hypergrad(f, g, y_star, x, tol=1e-13)
    itd = itd_hypergrad(f, g, y_star, x, lr=1.0, steps=150)  # contraction ≤ (1 − e⁻²)^150 ≈ 1e-9
    for key in x:
        assert rel_err(aid.grad[key], fd[key]) < 1e-6, key
        assert rel_err(itd.grad[key], fd[key]) < 1e-6, key
    # an inexact inner solve degrades AID: ‖ĥ − ∇F‖ ≲ c₁‖y − y*‖ + c₂‖r‖
    y_rough = inner_gradient_descent(g, y0, x, lr=1.0, steps=3).y
    rough = aid_hypergrad(f, g, y_rough, x, tol=1e-13)
    assert rel_err(rough.grad["log_l2"], fd["log_l2"]) > 1e-3


def test_conjugate_gradient_warm_start_and_controls():
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(8, 8, generator=gen, dtype=DT)
    A = M @ M.T + 0.1 * torch.eye(8, dtype=DT)
    b = torch.randn(8, generator=gen, dtype=DT)
    exact = torch.linalg.solve(A, b)
    capped = conjugate_gradient(lambda v: A @ v, b, tol=0.0, max_iter=3)
    assert capped.iterations == 3 and capped.residual_norm > 1e-6
    warm = conjugate_gradient(lambda v: A @ v, b, exact, tol=1e-9)
    assert warm.iterations == 1  # one product to check the warm start's residual
    with pytest.raises(ValueError):
        conjugate_gradient(lambda v: A @ v, b, tol=-1.0)
