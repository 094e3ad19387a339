"""Small float64 models with an exact Hessian from ``torch.autograd.functional.hessian``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


def mse_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return nn.functional.mse_loss(model(batch[0]), batch[1])


def tiny_mlp(seed: int = 0) -> tuple[nn.Module, Any, tuple[Tensor, Tensor]]:
    """A 3-4-2 tanh MLP (26 parameters), float64, with a batch of 12."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    batch = (torch.randn(12, 3, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64))
    return model, mse_loss, batch


def exact_hessian(model: nn.Module, loss_fn: Any, batch: Any, names: Sequence[str] | None = None) -> Tensor:
    """The dense Hessian with respect to ``names`` (default all), via ``torch.autograd.functional.hessian``."""
    params = dict(model.named_parameters())
    names = list(params) if names is None else list(names)
    shapes = [params[n].shape for n in names]
    numels = [params[n].numel() for n in names]
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])

    def loss_of(x: Tensor) -> Tensor:
        swapped = {n: part.view(s) for n, part, s in zip(names, x.split(numels), shapes, strict=True)}
        merged = {**{n: p.detach() for n, p in params.items()}, **swapped}
        wrapper = _Wrap(model, loss_fn)
        return torch.func.functional_call(wrapper, {f"model.{k}": v for k, v in merged.items()}, (batch,))

    return torch.autograd.functional.hessian(loss_of, flat)


class _Wrap(nn.Module):
    def __init__(self, model: nn.Module, loss_fn: Any) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


def matrix_with_spectrum(eigenvalues: Tensor, seed: int = 0) -> Tensor:
    """``Q diag(λ) Qᵀ`` with a random orthogonal ``Q`` (float64)."""
    gen = torch.Generator().manual_seed(seed)
    n = eigenvalues.numel()
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q @ torch.diag(eigenvalues.to(torch.float64)) @ q.T
