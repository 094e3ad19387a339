r"""Hutchinson estimators of the trace and the diagonal of a Hessian (block), with standard errors.

Paper: Hutchinson, "A Stochastic Estimator of the Trace of the Influence Matrix for Laplacian
Smoothing Splines", Communications in Statistics - Simulation and Computation, 1990. With
Rademacher probes :math:`z` (entries :math:`\pm 1` with probability 1/2),
:math:`\mathbb E[z^\top H z] = \operatorname{tr} H` and :math:`\mathbb E[z \odot Hz] = \operatorname{diag} H`
(Bekas, Kokiopoulou, Saad, "An estimator for the diagonal of a matrix", 2007). Both are averages of
``num_probes`` i.i.d. samples; the standard error is the sample standard deviation over
:math:`\sqrt{\text{num\_probes}}` (PyHessian's ``trace`` reports only the mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from steepest.diagnostics.hvp import LinearOperator


def rademacher(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """A vector of ``n`` independent Rademacher entries (±1 with probability 1/2).

    The draw happens on the CPU from ``generator`` (a CPU :class:`torch.Generator`), then moves to
    ``device``, so a seed gives the same probes on every device and every rank.

    Example:
        >>> rademacher(6, generator=torch.Generator().manual_seed(0))
        tensor([-1.,  1.,  1., -1.,  1.,  1.])
    """
    bits = torch.randint(0, 2, (n,), generator=generator)
    return (bits * 2 - 1).to(dtype=dtype, device=device)


@dataclass(frozen=True)
class TraceEstimate:
    r"""A Hutchinson trace estimate.

    Attributes:
        trace: the mean of the samples :math:`z_i^\top H z_i`.
        stderr: their sample standard deviation over :math:`\sqrt{n}` (``nan`` for one probe).
        num_probes: :math:`n`.
        samples: the samples themselves (float64, CPU).
    """

    trace: float
    stderr: float
    num_probes: int
    samples: Tensor


@dataclass(frozen=True)
class DiagonalEstimate:
    r"""A Hutchinson diagonal estimate (flat, in the operator's parameter order).

    Attributes:
        diagonal: mean of :math:`z_i \odot H z_i` (flat, operator dtype).
        stderr: per-coordinate standard error (flat; ``nan`` for one probe).
        num_probes: number of probes.
        per_parameter: ``diagonal`` split by parameter name when the operator is a
            :class:`~steepest.diagnostics.HessianOperator`, else ``None``.
    """

    diagonal: Tensor
    stderr: Tensor
    num_probes: int
    per_parameter: dict[str, Tensor] | None


def _generator(generator: torch.Generator | None, seed: int) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(seed)


def hutchinson_trace(
    op: LinearOperator, num_probes: int = 100, *, generator: torch.Generator | None = None, seed: int = 0
) -> TraceEstimate:
    r"""Estimate :math:`\operatorname{tr} H` as the mean of :math:`z^\top H z` over Rademacher probes.

    Args:
        op: the operator (e.g. :class:`~steepest.diagnostics.HessianOperator` of a block).
        num_probes: number of probes (one Hessian-vector product each). Default 100 (PyHessian's
            ``maxIter``; it stops earlier on a relative tolerance, we do not).
        generator: CPU generator for the probes; default a fresh one seeded with ``seed``.
        seed: seed used when ``generator`` is None.

    Raises:
        ValueError: ``num_probes < 1``.

    Example:
        >>> from steepest.diagnostics import MatrixOperator
        >>> est = hutchinson_trace(MatrixOperator(torch.diag(torch.tensor([1.0, 2.0, 3.0]))), 4)
        >>> est.trace, est.stderr  # exact for a diagonal matrix: z_i^2 = 1
        (6.0, 0.0)
    """
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    gen = _generator(generator, seed)
    samples = torch.empty(num_probes, dtype=torch.float64)
    for i in range(num_probes):
        z = rademacher(op.dim, generator=gen, dtype=op.dtype, device=op.device)
        samples[i] = torch.dot(z.double(), op.matvec_flat(z).double()).item()
    mean = float(samples.mean())
    stderr = float(samples.std(unbiased=True) / num_probes**0.5) if num_probes > 1 else float("nan")
    return TraceEstimate(trace=mean, stderr=stderr, num_probes=num_probes, samples=samples)


def hutchinson_diagonal(
    op: LinearOperator, num_probes: int = 100, *, generator: torch.Generator | None = None, seed: int = 0
) -> DiagonalEstimate:
    r"""Estimate :math:`\operatorname{diag} H` as the mean of :math:`z \odot Hz` over Rademacher probes.

    Arguments as :func:`hutchinson_trace`. The running mean and variance are kept in float64
    (Welford), so memory is three flat vectors whatever ``num_probes`` is.

    Raises:
        ValueError: ``num_probes < 1``.

    Example:
        >>> from steepest.diagnostics import MatrixOperator
        >>> hutchinson_diagonal(MatrixOperator(torch.tensor([[2.0, 0.0], [0.0, 5.0]])), 3).diagonal
        tensor([2., 5.])
    """
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    gen = _generator(generator, seed)
    mean = torch.zeros(op.dim, dtype=torch.float64, device=op.device)
    m2 = torch.zeros_like(mean)
    for i in range(1, num_probes + 1):
        z = rademacher(op.dim, generator=gen, dtype=op.dtype, device=op.device)
        sample = (z * op.matvec_flat(z)).double()
        delta = sample - mean
        mean += delta / i
        m2 += delta * (sample - mean)
    if num_probes > 1:
        stderr = (m2 / (num_probes - 1)).sqrt() / num_probes**0.5
    else:
        stderr = torch.full_like(mean, float("nan"))
    diagonal = mean.to(op.dtype)
    unflatten = getattr(op, "unflatten", None)
    per_parameter = unflatten(diagonal) if callable(unflatten) else None
    return DiagonalEstimate(
        diagonal=diagonal, stderr=stderr.to(op.dtype), num_probes=num_probes, per_parameter=per_parameter
    )
