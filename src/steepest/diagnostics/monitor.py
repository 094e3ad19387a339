"""A curvature probe for training loops: per-block top eigenvalues, traces and spectra in one call.

Distributed data parallel (DDP) — two ways, and which to use:

* **One rank, local batch** (the default, ``all_reduce=False``): call the monitor on rank 0 only,
  with that rank's batch, on the *unwrapped* module (``ddp_model.module``: the DDP wrapper's
  forward would try to synchronize gradients that other ranks never send). The result is the
  Hessian of the local-batch loss — a Hessian at a smaller batch size, which is what the curvature
  literature measures anyway (PyHessian uses a few fixed batches) — at no communication cost, and
  the other ranks are not blocked beyond the next collective. Prefer this.
* **All ranks, all-reduced products** (``all_reduce=True``): every rank calls the monitor at the same
  step with its own batch and the same ``seed``; each Hessian-vector product is averaged over the
  default process group, so the operator is the Hessian of the global-batch loss (for equal local
  batch sizes and a mean loss). The probes and the Lanczos recurrences are then identical on every
  rank. It costs one all-reduce of a parameter-sized vector per product and every rank's time; use
  it when the global-batch Hessian itself is the object of study (e.g. its dependence on batch size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from steepest.diagnostics._blocks import BlockSpec, resolve_blocks
from steepest.diagnostics.hutchinson import hutchinson_trace
from steepest.diagnostics.hvp import HessianOperator, LossFn
from steepest.diagnostics.lanczos import top_eigenvalues
from steepest.diagnostics.slq import SpectralQuadrature, stochastic_lanczos_quadrature


@dataclass(frozen=True)
class BlockCurvature:
    """Curvature of one block (or of the whole model).

    Attributes:
        name: block name (``"model"`` for the whole model).
        num_params: scalar parameters in the block.
        top_eigenvalues: the ``top_k`` largest eigenvalues of :math:`H_{bb}`, descending.
        residuals: Lanczos residual bounds for them.
        trace: Hutchinson trace estimate, or ``None`` if not asked for.
        trace_stderr: its standard error, or ``None``.
        spectrum: SLQ quadrature (for :meth:`SpectralQuadrature.density`), or ``None``.
    """

    name: str
    num_params: int
    top_eigenvalues: tuple[float, ...]
    residuals: tuple[float, ...]
    trace: float | None = None
    trace_stderr: float | None = None
    spectrum: SpectralQuadrature | None = None


@dataclass(frozen=True)
class CurvatureReport:
    """What :class:`HessianDiagnostics` returns.

    Attributes:
        loss: the loss at the point (``None`` with the ``"func"`` method).
        model: whole-model curvature, or ``None`` if not asked for.
        blocks: per-block curvature, in block order.
    """

    loss: float | None
    model: BlockCurvature | None
    blocks: dict[str, BlockCurvature] = field(default_factory=dict)

    def top_eigenvalue_spread(self) -> float:
        """Max over min of the blocks' top eigenvalues (blocks with a positive top eigenvalue).

        ``nan`` with fewer than two such blocks.
        """
        tops = [b.top_eigenvalues[0] for b in self.blocks.values() if b.top_eigenvalues and b.top_eigenvalues[0] > 0]
        return max(tops) / min(tops) if len(tops) >= 2 else float("nan")


class HessianDiagnostics:
    """Per-block Hessian diagnostics as a callable: ``report = diag(model, loss_fn, batch)``.

    Args:
        blocks: a :data:`~steepest.diagnostics.BlockSpec` (``"parameter"`` by default; ``"module"``,
            ``"model"`` or ``{block: [parameter names]}``).
        top_k: eigenvalues per block by Lanczos (default 1; 0 skips).
        lanczos_steps: Lanczos steps per block (default ``min(dim, max(30, 3 top_k))``).
        trace_probes: Hutchinson probes per block (default 0: no trace).
        spectrum_steps: if > 0, also run SLQ with that many steps per probe and keep the quadrature.
        spectrum_probes: SLQ probes (default 1, as PyHessian).
        whole_model: also report the whole model (default True).
        method: ``"autograd"`` (one graph shared by all blocks) or ``"func"`` (:mod:`torch.func`).
        seed: seeds the monitor's probe generator once, at construction; calls draw in sequence.
        all_reduce: average Hessian-vector products over ranks (see the module docstring on DDP).

    ``loss_fn(model, batch)`` returns the scalar loss without calling ``backward``; gradients in
    ``.grad`` are not touched, so the monitor can run between ``backward`` and ``optimizer.step``.

    Raises:
        ValueError: a negative count.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        >>> batch = (torch.randn(16, 3), torch.randn(16, 1))
        >>> loss_fn = lambda m, b: nn.functional.mse_loss(m(b[0]), b[1])
        >>> report = HessianDiagnostics(trace_probes=10)(net, loss_fn, batch)
        >>> list(report.blocks), report.model.num_params
        (['0.weight', '0.bias', '2.weight', '2.bias'], 21)
        >>> report.blocks["2.bias"].top_eigenvalues  # d^2/db^2 of a mean squared error
        (2.0,)
    """

    def __init__(
        self,
        blocks: BlockSpec = "parameter",
        *,
        top_k: int = 1,
        lanczos_steps: int | None = None,
        trace_probes: int = 0,
        spectrum_steps: int = 0,
        spectrum_probes: int = 1,
        whole_model: bool = True,
        method: Literal["autograd", "func"] = "autograd",
        seed: int = 0,
        all_reduce: bool = False,
    ) -> None:
        for label, value in (
            ("top_k", top_k),
            ("trace_probes", trace_probes),
            ("spectrum_steps", spectrum_steps),
        ):
            if value < 0:
                raise ValueError(f"{label} must be >= 0, got {value}")
        if spectrum_probes < 1:
            raise ValueError(f"spectrum_probes must be >= 1, got {spectrum_probes}")
        if lanczos_steps is not None and lanczos_steps < 1:
            raise ValueError(f"lanczos_steps must be >= 1, got {lanczos_steps}")
        if method not in ("autograd", "func"):
            raise ValueError(f"method must be 'autograd' or 'func', got {method!r}")
        self.blocks, self.top_k, self.lanczos_steps = blocks, top_k, lanczos_steps
        self.trace_probes, self.spectrum_steps, self.spectrum_probes = trace_probes, spectrum_steps, spectrum_probes
        self.whole_model, self.method, self.all_reduce = whole_model, method, all_reduce
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: nn.Module, loss_fn: LossFn, batch: Any) -> CurvatureReport:
        """Measure the Hessian of ``loss_fn(model, batch)`` at the model's current parameters."""
        partition = resolve_blocks(model, self.blocks)
        full = HessianOperator(model, loss_fn, batch, method=self.method, all_reduce=self.all_reduce)
        whole = self._measure("model", full) if self.whole_model else None
        per_block = {name: self._measure(name, full.block(names)) for name, names in partition.items()}
        return CurvatureReport(loss=full.loss, model=whole, blocks=per_block)

    def _measure(self, name: str, op: HessianOperator) -> BlockCurvature:
        tops: tuple[float, ...] = ()
        residuals: tuple[float, ...] = ()
        if self.top_k:
            k = min(self.top_k, op.dim)
            eig = top_eigenvalues(op, k, num_steps=self.lanczos_steps, generator=self.generator)
            tops, residuals = tuple(eig.eigenvalues.tolist()), tuple(eig.residuals.tolist())
        trace = stderr = None
        if self.trace_probes:
            est = hutchinson_trace(op, self.trace_probes, generator=self.generator)
            trace, stderr = est.trace, est.stderr
        spectrum = None
        if self.spectrum_steps:
            spectrum = stochastic_lanczos_quadrature(
                op, self.spectrum_probes, self.spectrum_steps, generator=self.generator
            )
        return BlockCurvature(name, op.dim, tops, residuals, trace, stderr, spectrum)
