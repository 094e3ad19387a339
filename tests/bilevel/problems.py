"""Bilevel problems with closed-form hypergradients (algorithm-specs-2.md §33), float64."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

DT = torch.float64


@dataclass
class Ridge:
    """Train/validation regression data for the ridge problems."""

    X: Tensor
    y: Tensor
    Xv: Tensor
    yv: Tensor


def make_ridge(n: int = 30, d: int = 5, n_val: int = 20, seed: int = 0) -> Ridge:
    gen = torch.Generator().manual_seed(seed)
    w_true = torch.randn(d, generator=gen, dtype=DT)
    X = torch.randn(n, d, generator=gen, dtype=DT)
    Xv = torch.randn(n_val, d, generator=gen, dtype=DT)
    y = X @ w_true + 0.5 * torch.randn(n, generator=gen, dtype=DT)
    yv = Xv @ w_true + 0.5 * torch.randn(n_val, generator=gen, dtype=DT)
    return Ridge(X, y, Xv, yv)


def scalar_ridge_inner(data: Ridge):
    """g(w, λ) = ½ mean((Xw − y)²) + ½ λ‖w‖² (the jaxopt/torchopt convention)."""
    return lambda w, lam: 0.5 * ((data.X @ w - data.y) ** 2).mean() + 0.5 * lam * (w**2).sum()


def perfeature_ridge_inner(data: Ridge):
    """g(w, λ) = ½‖Xw − y‖² + ½ Σ λ_j w_j²."""
    return lambda w, lam: 0.5 * ((data.X @ w - data.y) ** 2).sum() + 0.5 * (lam * w**2).sum()


def validation_loss(data: Ridge):
    """f(w, λ) = ½‖X_v w − y_v‖² (no direct dependence on λ)."""
    return lambda w, lam: 0.5 * ((data.Xv @ w - data.yv) ** 2).sum()


def scalar_ridge_closed_form(data: Ridge, lam: float) -> tuple[Tensor, Tensor]:
    """(w*, dF/dλ): A = XᵀX + nλI, dF/dλ = −n vᵀw* with A v = X_vᵀ(X_v w* − y_v)."""
    n, d = data.X.shape
    A = data.X.T @ data.X + n * lam * torch.eye(d, dtype=DT)
    w = torch.linalg.solve(A, data.X.T @ data.y)
    v = torch.linalg.solve(A, data.Xv.T @ (data.Xv @ w - data.yv))
    return w, -n * (v @ w)


def perfeature_ridge_closed_form(data: Ridge, lam: Tensor) -> tuple[Tensor, Tensor]:
    """(w*, ∇_λF): A = XᵀX + diag(λ), ∇_λF = −w* ⊙ v with A v = ∇_w f(w*)."""
    A = data.X.T @ data.X + torch.diag(lam)
    w = torch.linalg.solve(A, data.X.T @ data.y)
    v = torch.linalg.solve(A, data.Xv.T @ (data.Xv @ w - data.yv))
    return w, -w * v


def hessian_extremes(data: Ridge, lam: Tensor | float, scale: float) -> tuple[float, float]:
    """(λ_min, λ_max) of ∇²_ww g = scale·XᵀX + diag(λ)."""
    d = data.X.shape[1]
    H = scale * data.X.T @ data.X + torch.diag(torch.as_tensor(lam, dtype=DT).expand(d))
    ev = torch.linalg.eigvalsh(H)
    return float(ev[0]), float(ev[-1])
