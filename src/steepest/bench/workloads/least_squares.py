"""Ill-conditioned linear least squares with a prescribed spectrum and an exactly known optimum.

The problem is ``f(x) = 1/(2n) * ||A x - b||^2`` with ``A = sqrt(n) * U diag(s) V^T`` (``U``, ``V`` random
orthonormal, ``s`` geometric from 1 down to ``1/sqrt(kappa)``), so the Hessian ``A^T A / n`` has condition number
``kappa``; ``b = A x_true + noise``. The optimum ``f*`` is computed once in float64 by ``torch.linalg.lstsq``, so
the target is on the relative suboptimality ``(f(x) - f*) / (f(0) - f*)``, exactly as in the setup of the
benchmark note (W2). The instance is fixed (data seed 0); the run seed sets the initial point and batch order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn

from steepest.bench.workloads._base import (
    Budget,
    Size,
    Target,
    Workload,
    epoch_batches,
    register_workload,
    seeded_generator,
)


@dataclass(frozen=True)
class _LSConfig:
    n: int
    d: int
    kappa: float
    noise: float
    target: float
    budget: Budget


@dataclass(frozen=True)
class _LSData:
    a64: Tensor
    b64: Tensor
    a: Tensor
    b: Tensor
    f_star: float
    f_zero: float


_CONFIGS: dict[Size, _LSConfig] = {
    "tiny": _LSConfig(n=256, d=16, kappa=1e2, noise=0.01, target=1e-3, budget=Budget(400, 50, 32)),
    "quick": _LSConfig(n=4000, d=200, kappa=1e4, noise=0.01, target=1e-4, budget=Budget(6000, 250, 64)),
    "full": _LSConfig(n=20000, d=500, kappa=1e5, noise=0.01, target=1e-5, budget=Budget(30000, 1000, 128)),
}

_DATA_SEED = 0
_SET_BY = (
    "fixed by design (f* known); at quick, SGD momentum 0.9 reaches it in 2000 steps at lr 0.3 and 4250 at "
    "lr 0.1 (seed 0), AdamW (lr 1e-3 or 3e-3) does not within 6000 (steepest 0.1.0, torch 2.13 CPU, 1 thread)"
)


@register_workload
class LeastSquares(Workload):
    """Minibatch least squares ``1/(2n)||Ax - b||^2`` with Hessian condition number ``kappa`` and known ``f*``.

    Metrics: ``train_loss`` and ``val_loss`` are both the full objective ``f(x)`` (an optimization problem,
    not a learning one), ``suboptimality`` is ``(f(x) - f*) / (f(0) - f*)`` and is the target metric.
    """

    name = "least_squares"
    description = "ill-conditioned least squares (Hessian kappa 1e4 at quick), target on (f - f*)/(f(0) - f*)"

    def __init__(self, size: Size = "quick") -> None:
        super().__init__(size)
        self._cfg = _CONFIGS[size]

    @cached_property
    def _data(self) -> _LSData:
        # Built on first use, so listing workloads (targets, budgets) costs nothing.
        cfg = self._cfg
        gen = seeded_generator(_DATA_SEED)
        dt = torch.float64
        u, _ = torch.linalg.qr(torch.randn(cfg.n, cfg.d, generator=gen, dtype=dt))
        v, _ = torch.linalg.qr(torch.randn(cfg.d, cfg.d, generator=gen, dtype=dt))
        s = torch.logspace(0.0, -0.5 * math.log10(cfg.kappa), cfg.d, dtype=dt)
        a = (u * s) @ v.T * cfg.n**0.5
        b = a @ torch.randn(cfg.d, generator=gen, dtype=dt) + cfg.noise * torch.randn(cfg.n, generator=gen, dtype=dt)
        x_star = torch.linalg.lstsq(a, b.unsqueeze(1)).solution.squeeze(1)
        return _LSData(
            a64=a,
            b64=b,
            a=a.to(torch.float32),
            b=b.to(torch.float32),
            f_star=float(0.5 * ((a @ x_star - b) ** 2).mean()),
            f_zero=float(0.5 * (b**2).mean()),
        )

    @property
    def f_star(self) -> float:
        """The optimal value ``f*`` (float64 least-squares solution)."""
        return self._data.f_star

    @property
    def f_zero(self) -> float:
        """``f(0)``, the normaliser of the suboptimality."""
        return self._data.f_zero

    @property
    def target(self) -> Target:
        """Relative suboptimality at most the size's threshold."""
        return Target("suboptimality", self._cfg.target, higher_is_better=False, set_by=_SET_BY)

    @property
    def budget(self) -> Budget:
        """The size's step budget."""
        return self._cfg.budget

    def init_model(self, seed: int) -> nn.Module:
        """``x`` as a bias-free ``Linear(d, 1)``, entries N(0, 1/d) from ``seed``."""
        gen = seeded_generator(seed)
        model = nn.Linear(self._cfg.d, 1, bias=False)
        with torch.no_grad():
            model.weight.copy_(torch.randn(1, self._cfg.d, generator=gen) / self._cfg.d**0.5)
        return model

    def train_batches(self, seed: int) -> Iterator[tuple[Tensor, ...]]:
        """Shuffled minibatches without replacement, reshuffled every epoch, order from ``seed``."""
        yield from epoch_batches((self._data.a, self._data.b), self.budget.batch_size, seed)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Half the mean squared residual on the batch."""
        a, b = batch
        return 0.5 * ((model(a).squeeze(1) - b) ** 2).mean()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Full objective (in float64) and relative suboptimality."""
        with torch.no_grad():
            x = next(iter(model.parameters())).detach().to(torch.float64).reshape(-1)
            f = float(0.5 * ((self._data.a64 @ x - self._data.b64) ** 2).mean())
        sub = (f - self.f_star) / (self.f_zero - self.f_star)
        return {"train_loss": f, "val_loss": f, "suboptimality": sub}
