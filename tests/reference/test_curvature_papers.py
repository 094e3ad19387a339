r"""Float64 transcriptions of SophiaH, M-FAC and NewtonCG, written from the papers with explicit matrices.

Each transcription works on the flat parameter vector :math:`x` with the **explicit** Hessian
(``torch.autograd.functional.hessian``) or the explicit damped empirical Fisher and its inverse,
never with steepest's code paths; only the random probes are shared (recorded from ours).

* Sophia-H (Liu et al. 2024, Algorithm 3 with Hutchinson): ``h = b2 h + (1-b2) u*(H u)`` when
  ``t mod k = 1``; ``x <- x(1 - lr wd) - lr clip(m / max(rho h, eps), 1)``.
* M-FAC (Frantar et al. 2021): ``F = damp I + (1/m) sum_i g_i g_i^T`` over the window of the last
  m (decayed) gradients, zero rows until filled; ``u = F^{-1} g``; momentum EMA; ``x <- x - lr u``.
* Newton-CG with negative steps (Shea & Schmidt 2024): with CG run to convergence the direction
  is the Newton direction ``-H^{-1} g`` even for indefinite ``H``; the step is negative exactly when
  ``g.d > 0``; the accepted step satisfies the strong Wolfe conditions in ``|alpha|``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

import steepest
import steepest.optim._curvature_base as curvature_base
from tests.reference._curvature_problem import SmallNet, make_params


def _flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _unflat(x: Tensor, like: list[Tensor]) -> list[Tensor]:
    out, offset = [], 0
    for p in like:
        out.append(x[offset : offset + p.numel()].reshape(p.shape))
        offset += p.numel()
    return out


# -- Sophia-H -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"lr": 0.05, "rho": 0.05, "update_period": 3}, id="gaussian"),
        pytest.param(
            {"lr": 0.05, "rho": 0.5, "update_period": 2, "probe": "rademacher", "weight_decay": 0.1, "eps": 1e-3},
            id="rademacher-wd",
        ),
    ],
)
def test_sophia_h_matches_paper_transcription(kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    net = SmallNet()
    params = make_params()
    opt = steepest.SophiaH(params, **kwargs)
    recorded: list[Tensor] = []
    draw = curvature_base.draw_probe
    monkeypatch.setattr(curvature_base, "draw_probe", lambda *a: recorded.append(draw(*a)) or recorded[-1])

    lr, rho, k = kwargs["lr"], kwargs["rho"], kwargs["update_period"]
    wd, eps = kwargs.get("weight_decay", 0.0), kwargs.get("eps", 1e-12)
    beta1, beta2 = 0.96, 0.99
    x = _flat(params).clone()
    m, h = torch.zeros_like(x), torch.zeros_like(x)

    def f(v: Tensor) -> Tensor:
        return net.loss(_unflat(v, params))

    for t in range(1, 13):
        recorded.clear()
        opt.zero_grad()
        net.loss(params).backward(create_graph=True)
        opt.step()

        g = torch.autograd.functional.jacobian(f, x)
        m = beta1 * m + (1 - beta1) * g
        if t % k == 1 or k == 1:
            u = _flat(recorded)
            hessian = torch.autograd.functional.hessian(f, x, vectorize=True)
            h = beta2 * h + (1 - beta2) * u * (hessian @ u)
        else:
            assert not recorded, "no probe may be drawn between refreshes"
        x = x * (1 - lr * wd)
        x = x - lr * torch.clamp(m / torch.clamp(rho * h, min=eps), -1.0, 1.0)
        torch.testing.assert_close(_flat(params), x, rtol=0, atol=1e-12)


# -- M-FAC --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"lr": 1e-3, "ngrads": 4, "damp": 1e-5}, id="official-damp"),
        pytest.param({"lr": 0.05, "ngrads": 3, "damp": 0.1, "momentum": 0.9, "weight_decay": 0.01}, id="momentum-wd"),
    ],
)
def test_mfac_matches_explicit_inverse_fisher(kwargs: dict[str, Any]) -> None:
    net = SmallNet()
    params = make_params()
    opt = steepest.MFAC(params, **kwargs)
    lr, m, damp = kwargs["lr"], kwargs["ngrads"], kwargs["damp"]
    mu, wd = kwargs.get("momentum", 0.0), kwargs.get("weight_decay", 0.0)
    x = _flat(params).clone()
    window = [torch.zeros_like(x) for _ in range(m)]
    v = torch.zeros_like(x)
    for t in range(10):
        opt.zero_grad()
        net.loss(params).backward()
        opt.step()

        g = torch.autograd.functional.jacobian(lambda z: net.loss(_unflat(z, params)), x) + wd * x
        window[t % m] = g
        fisher = damp * torch.eye(x.numel(), dtype=x.dtype) + sum(torch.outer(w, w) for w in window) / m
        u = torch.linalg.solve(fisher, g)
        if mu > 0:
            v = mu * v + (1 - mu) * u
            u = v
        x = x - lr * u
        torch.testing.assert_close(_flat(params), x, rtol=1e-9, atol=1e-11)


# -- Newton-CG with negative step sizes ---------------------------------------------------


class DoubleWell:
    """``f(x) = sum_i a_i (-(Qx)_i^2 / 2 + (Qx)_i^4 / 4)``: saddle at 0, negative curvature near it."""

    def __init__(self, dim: int = 6, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        self.a = 0.5 + torch.rand(dim, generator=gen, dtype=torch.float64)
        self.start = self.q.T @ (0.3 * torch.randn(dim, generator=gen, dtype=torch.float64))

    def __call__(self, x: Tensor) -> Tensor:
        z = self.q @ x
        return (self.a * (-(z**2) / 2 + z**4 / 4)).sum()


@pytest.mark.parametrize("negative_steps", [True, False])
def test_newton_cg_follows_the_paper(negative_steps: bool) -> None:
    f = DoubleWell()
    x = torch.nn.Parameter(f.start.clone())
    c1, c2 = 1e-4, 0.9
    opt = steepest.NewtonCG([x], cg_max_iter=50, cg_tol=1e-12, c1=c1, c2=c2, negative_steps=negative_steps)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = f(x)
        if torch.is_grad_enabled():
            loss.backward(create_graph=True)
        return loss

    signs = []
    for _ in range(8):
        x0 = x.detach().clone()
        g = torch.autograd.functional.jacobian(f, x0)
        if float(g.norm()) < 1e-12:
            # Stationary to rounding (Newton converges quadratically: ||g|| is 2e-16 by step 8 with
            # negative steps): no step can decrease f enough, so the line search rightly returns 0.
            break
        hessian = torch.autograd.functional.hessian(f, x0)
        eigenvalues = torch.linalg.eigvalsh(hessian)
        opt.step(closure)
        d = opt.state[x]["direction"]
        alpha = float(opt.state[x]["step_size"])
        if negative_steps or eigenvalues.min() > 0:
            # CG to convergence: the Newton direction, kept through negative curvature.
            torch.testing.assert_close(d, -torch.linalg.solve(hessian, g), rtol=1e-8, atol=1e-10)
        elif bool((g @ hessian @ g) <= 0):
            # Classic truncated Newton at negative curvature on the first CG direction: -g.
            torch.testing.assert_close(d, -g, rtol=0, atol=1e-14)
        slope = float(g @ d)
        assert alpha != 0.0
        assert (alpha < 0) == (slope > 0), "the step is negative exactly when d points uphill"
        torch.testing.assert_close(x.detach(), x0 + alpha * d, rtol=0, atol=1e-14)
        new = x.detach()
        assert float(f(new)) <= float(f(x0)) + c1 * alpha * slope  # sufficient decrease
        g_new = torch.autograd.functional.jacobian(f, new)
        assert abs(float(g_new @ d)) <= c2 * abs(slope) + 1e-12  # strong curvature condition
        signs.append(alpha < 0)
    assert len(signs) >= 6
    assert any(signs) == negative_steps, "negative steps occur on this problem only when allowed"
    assert float(f(x.detach())) < float(f(f.start))  # (each step already checked for sufficient decrease)
