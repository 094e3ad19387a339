"""Low-rank matrix sensing with an over-parameterised factorisation ``U U^T`` (known optimum 0).

The setting of Li, Ma, Zhang, "Algorithmic Regularization in Over-parameterized Matrix Sensing and Neural
Networks with Quadratic Activations", COLT 2018, arXiv:1712.09203 (also the benchmark note's W3): an unknown
positive semidefinite ``M* = X X^T / d`` of rank ``r`` (``X`` is ``d x r`` standard Gaussian, so the nonzero
eigenvalues of ``M*`` are about 1), observed through ``m`` noiseless linear measurements
``y_i = <A_i, M*>`` with symmetric Gaussian matrices ``A_i = (G_i + G_i^T) / 2``. The model is a full ``d x d``
factor ``U`` (``k = d``: over-parameterised) started small, ``U_0 = 1e-3 * N(0, 1)``, and the loss is

    f(U) = 1/(2m) * sum_i (<A_i, U U^T> - y_i)^2,

whose minimum is 0 (attained at ``U U^T = M*``). With ``m`` a few times ``d r`` the measurements identify
``M*`` and gradient descent from a small start recovers it (the paper's implicit bias). Full-batch: every step
sees all ``m`` measurements; the run seed sets ``U_0`` only.

Metrics: ``train_loss`` is ``f(U)``; ``val_loss`` is the same loss on ``m / 4`` held-out measurements (a
recovery check); ``suboptimality = (f(U) - f*) / (f(0) - f*)`` with ``f* = 0`` is the target metric (``f(0)``
rather than ``f(U_0)``, so it does not depend on the seed; they differ by about 1e-5 relative);
``recovery_error = ||U U^T - M*||_F / ||M*||_F`` is reported as an extra.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import repeat

import torch
from torch import Tensor, nn

from steepest.bench.workloads._base import Budget, Size, Target, Workload, register_workload, seeded_generator

_DATA_SEED = 0
_INIT_SCALE = 1e-3


@dataclass(frozen=True)
class _SensingConfig:
    dim: int
    rank: int
    measurements: int
    target: float
    budget: Budget


_CONFIGS: dict[Size, _SensingConfig] = {
    "tiny": _SensingConfig(12, 2, 150, 1e-3, Budget(400, 20, 150)),
    "quick": _SensingConfig(100, 5, 2000, 1e-7, Budget(2000, 50, 2000)),
    "full": _SensingConfig(150, 5, 3000, 1e-7, Budget(10000, 100, 3000)),
}

QUICK_SET_BY = (
    "AdamW (wd 0) lr 1e-2 reaches 1e-6 at step 150 (1.1 s) and 8e-13 by step 1000; SGD momentum 0.9 lr 0.1 reaches "
    "1e-6 at step 500 (3.7 s) and 2.9e-8 by step 1000; gradient descent lr 0.3 stalls near 2e-6 (lr 1.0 diverges); "
    "seed 0, 1000 steps; steepest 0.1.0, torch 2.13.0+cpu, 1 thread on the shared 2-core machine; "
    "benchmarks/calibrate_workloads.py"
)
_OTHER_SET_BY = "fixed by design (f* = 0); tiny for tests, full provisional"


class Factor(nn.Module):
    """The factor ``U`` (``d x d``) of the estimate ``U U^T``."""

    def __init__(self, u: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(u)

    def forward(self) -> Tensor:
        """The estimate ``U U^T``."""
        return self.weight @ self.weight.T


@register_workload
class MatrixSensing(Workload):
    """Rank-``r`` PSD matrix recovered from Gaussian measurements by an over-parameterised ``U U^T``.

    Target: ``suboptimality`` (``f(U) / f(U_0)``, the optimum being 0) at most the size's threshold.
    """

    name = "matrix_sensing"
    description = "low-rank matrix sensing (d=100, rank 5, 2000 measurements at quick), U U^T from a small start"
    extra_metrics = ("recovery_error",)

    def __init__(self, size: Size = "quick") -> None:
        super().__init__(size)
        self._cfg = _CONFIGS[size]

    @cached_property
    def _data(self) -> tuple[Tensor, Tensor, Tensor]:
        # Built on first use (listing workloads needs only target and budget): M*, A_train, A_val.
        cfg = self._cfg
        gen = seeded_generator(_DATA_SEED)
        d = cfg.dim
        x = torch.randn(d, cfg.rank, generator=gen)

        def sensing(count: int) -> Tensor:
            g = torch.randn(count, d, d, generator=gen)
            return (0.5 * (g + g.transpose(1, 2))).reshape(count, d * d)

        a_train = sensing(cfg.measurements)
        return x @ x.T / d, a_train, sensing(max(cfg.measurements // 4, 1))

    @property
    def m_star(self) -> Tensor:
        """The rank-``r`` target ``M* = X X^T / d``."""
        return self._data[0]

    @property
    def a_train(self) -> Tensor:
        """Training sensing matrices, flattened: ``(m, d*d)``."""
        return self._data[1]

    @property
    def a_val(self) -> Tensor:
        """Held-out sensing matrices, flattened: ``(m/4, d*d)``."""
        return self._data[2]

    @cached_property
    def y_train(self) -> Tensor:
        """Training measurements ``<A_i, M*>``."""
        return _measure(self.a_train, self.m_star)

    @cached_property
    def y_val(self) -> Tensor:
        """Held-out measurements."""
        return _measure(self.a_val, self.m_star)

    @property
    def target(self) -> Target:
        """Relative suboptimality at most the size's threshold."""
        set_by = QUICK_SET_BY if self.size == "quick" else _OTHER_SET_BY
        return Target("suboptimality", self._cfg.target, higher_is_better=False, set_by=set_by)

    @property
    def budget(self) -> Budget:
        """The size's step budget (full batch: all measurements every step)."""
        return self._cfg.budget

    def init_model(self, seed: int) -> nn.Module:
        """``U_0 = 1e-3 * N(0, 1)^{d x d}`` drawn from ``seed``."""
        d = self._cfg.dim
        return Factor(_INIT_SCALE * torch.randn(d, d, generator=seeded_generator(seed)))

    def train_batches(self, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """All training measurements, every step."""
        return repeat((self.a_train, self.y_train))

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        """``1/(2m) sum_i (<A_i, U U^T> - y_i)^2`` over the batch's measurements."""
        a, y = batch
        estimate = model()
        return 0.5 * ((a @ estimate.reshape(-1) - y) ** 2).mean()

    def _initial_loss(self) -> float:
        # f(U_0) for U_0 = 0 is ||y||^2 / (2m); a start of scale 1e-3 changes it by about 1e-5 relative, so the
        # suboptimality is normalised by this seed-independent value.
        return float(0.5 * (self.y_train**2).mean())

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Train and held-out loss, relative suboptimality and relative recovery error."""
        with torch.no_grad():
            estimate = model()
            train = float(self.loss(model, (self.a_train, self.y_train)))
            val = float(self.loss(model, (self.a_val, self.y_val)))
            recovery = float(torch.linalg.matrix_norm(estimate - self.m_star) / torch.linalg.matrix_norm(self.m_star))
        return {
            "train_loss": train,
            "val_loss": val,
            "suboptimality": train / self._initial_loss(),
            "recovery_error": recovery,
        }


def _measure(a: Tensor, m: Tensor) -> Tensor:
    """``a @ vec(m)`` computed in float64 and rounded once to ``a``'s dtype.

    A float32 matrix-vector product on the CPU may round differently from one call to the next
    (the BLAS kernel it takes depends on the operands' memory alignment), so two builds of the
    workload would train on measurements differing in the last bit; in float64 such differences
    vanish in the final rounding.
    """
    return (a.double() @ m.double().reshape(-1)).to(a.dtype)
