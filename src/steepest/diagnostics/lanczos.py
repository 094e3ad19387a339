r"""Lanczos with full reorthogonalization, and extreme eigenvalues of a Hessian (block).

Lanczos (1950) builds an orthonormal basis :math:`Q_m` of the Krylov space
:math:`\mathcal K_m(H, v)` and the tridiagonal :math:`T_m = Q_m^\top H Q_m` (diagonal
:math:`\alpha`, off-diagonal :math:`\beta`); the eigenvalues of :math:`T_m` (Ritz values) converge
to the extreme eigenvalues of :math:`H` first. In floating point the basis loses orthogonality and
spurious copies of converged eigenvalues appear, so — as PyHessian's ``lanczos`` in its density
routine does (Yao, Gholami, Keutzer, Mahoney, "PyHessian: Neural Networks Through the Lens of the
Hessian", 2020, arXiv:1912.07145) — every new vector is orthogonalized against the whole basis
(twice: "twice is enough", Parlett). The basis costs ``num_steps x dim`` memory.

Differences from PyHessian: PyHessian finds the top-k eigenvalues by power iteration with
deflation; here they are the top Ritz values of one Lanczos run (fewer products for the same
accuracy), with the standard residual bound :math:`|\beta_m y_{m,i}|` reported for each. A block
of size ``dim`` needs at most ``dim`` steps; the run stops early at an invariant subspace.
Lanczos from one start vector sees one copy of a repeated eigenvalue (``k`` distinct values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from steepest.diagnostics.hutchinson import rademacher
from steepest.diagnostics.hvp import LinearOperator


@dataclass(frozen=True)
class LanczosResult:
    """The tridiagonal matrix of a Lanczos run.

    Attributes:
        alpha: diagonal, float64, length ``m`` (the steps actually taken).
        beta: off-diagonal, float64, length ``m - 1``.
        last_beta: the norm of the residual after the last step (0 at an invariant subspace).
        basis: the ``m x dim`` orthonormal basis (operator dtype), or ``None`` if not kept.
    """

    alpha: Tensor
    beta: Tensor
    last_beta: float
    basis: Tensor | None

    def tridiagonal(self) -> Tensor:
        """:math:`T_m` as a dense float64 matrix."""
        return torch.diag(self.alpha) + torch.diag(self.beta, 1) + torch.diag(self.beta, -1)

    def ritz(self) -> tuple[Tensor, Tensor]:
        """Eigenvalues (ascending) and eigenvectors of :math:`T_m`, float64."""
        values, vectors = torch.linalg.eigh(self.tridiagonal())
        return values, vectors


def lanczos(
    op: LinearOperator,
    num_steps: int,
    *,
    start: Tensor | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    reorthogonalize: bool = True,
    keep_basis: bool = False,
) -> LanczosResult:
    """Run ``num_steps`` Lanczos steps on a symmetric operator.

    Args:
        op: the operator.
        num_steps: Krylov dimension ``m`` (capped at ``op.dim``).
        start: start vector (normalized here); default a Rademacher vector from ``generator``.
        generator: CPU generator for the start vector; default a fresh one seeded with ``seed``.
        seed: seed used when neither ``start`` nor ``generator`` is given.
        reorthogonalize: full reorthogonalization (default True; False is the textbook three-term
            recurrence, for comparison only).
        keep_basis: return the basis (needed for Ritz vectors).

    Raises:
        ValueError: ``num_steps < 1``, or a zero or wrongly shaped start vector.

    Example:
        >>> from steepest.diagnostics import MatrixOperator
        >>> run = lanczos(MatrixOperator(torch.diag(torch.arange(1.0, 6.0))), 5)
        >>> [round(x, 4) for x in run.ritz()[0].tolist()]
        [1.0, 2.0, 3.0, 4.0, 5.0]
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    m = min(num_steps, op.dim)
    if start is None:
        gen = generator if generator is not None else torch.Generator().manual_seed(seed)
        start = rademacher(op.dim, generator=gen, dtype=op.dtype, device=op.device)
    if start.shape != (op.dim,):
        raise ValueError(f"start must have shape ({op.dim},), got {tuple(start.shape)}")
    norm = start.norm()
    if norm == 0:
        raise ValueError("start vector is zero")
    basis = torch.empty(m, op.dim, dtype=op.dtype, device=op.device)
    basis[0] = start.to(op.dtype) / norm
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    tiny = 100 * torch.finfo(op.dtype).eps
    last_beta = 0.0
    for j in range(m):
        q = basis[j]
        w = op.matvec_flat(q).to(op.dtype)
        alpha = float(torch.dot(w, q))
        w = w - alpha * q
        if j > 0:
            w = w - betas[-1] * basis[j - 1]
        if reorthogonalize:
            done = basis[: j + 1]
            for _ in range(2):
                w = w - done.T @ (done @ w)
        beta = float(w.norm())
        alphas.append(alpha)
        scale = max(scale, abs(alpha), beta)
        last_beta = beta
        if j == m - 1:
            break
        if beta <= tiny * max(scale, 1e-30):
            last_beta = 0.0  # invariant subspace: the Ritz values are exact eigenvalues
            break
        betas.append(beta)
        basis[j + 1] = w / beta
    steps = len(alphas)
    return LanczosResult(
        alpha=torch.tensor(alphas, dtype=torch.float64),
        beta=torch.tensor(betas, dtype=torch.float64),
        last_beta=last_beta,
        basis=basis[:steps] if keep_basis else None,
    )


@dataclass(frozen=True)
class EigenResult:
    r"""Extreme eigenvalues from Lanczos.

    Attributes:
        eigenvalues: the ``k`` selected Ritz values, float64 (descending for ``"largest"`` and
            ``"magnitude"``, ascending for ``"smallest"``).
        residuals: residual bounds :math:`\|H y - \theta y\| = |\beta_m y_{m,i}|` per value.
        num_steps: Lanczos steps taken.
        eigenvectors: ``k x dim`` Ritz vectors if asked for, else ``None``.
    """

    eigenvalues: Tensor
    residuals: Tensor
    num_steps: int
    eigenvectors: Tensor | None = None


def top_eigenvalues(
    op: LinearOperator,
    k: int = 1,
    *,
    num_steps: int | None = None,
    which: Literal["largest", "smallest", "magnitude"] = "largest",
    generator: torch.Generator | None = None,
    seed: int = 0,
    return_eigenvectors: bool = False,
) -> EigenResult:
    """The ``k`` extreme eigenvalues of a symmetric operator by Lanczos with full reorthogonalization.

    Args:
        op: the operator (a :class:`~steepest.diagnostics.HessianOperator` for a model or a block).
        k: how many eigenvalues (at most ``op.dim``).
        num_steps: Lanczos steps; default ``min(dim, max(30, 3k))``. Check ``residuals`` for
            convergence; ``num_steps = dim`` gives every distinct eigenvalue exactly (up to rounding).
        which: ``"largest"`` algebraic (default; the "top eigenvalue" of the sharpness literature),
            ``"smallest"`` algebraic, or largest ``"magnitude"``.
        generator: CPU generator for the random start vector (see :func:`lanczos`).
        seed: seed used when ``generator`` is None.
        return_eigenvectors: also return the Ritz vectors (keeps the basis in memory).

    Returns fewer than ``k`` values when the start vector's Krylov space has fewer dimensions
    (an invariant subspace reached early).

    Raises:
        ValueError: ``k < 1`` or ``k > op.dim``, or an unknown ``which``.

    Example:
        >>> from steepest.diagnostics import MatrixOperator
        >>> top = top_eigenvalues(MatrixOperator(torch.diag(torch.tensor([3.0, -7.0, 1.0]))), 2)
        >>> [round(x, 5) for x in top.eigenvalues.tolist()]
        [3.0, 1.0]
    """
    if not 1 <= k <= op.dim:
        raise ValueError(f"k must be in [1, {op.dim}], got {k}")
    if which not in ("largest", "smallest", "magnitude"):
        raise ValueError(f"which must be 'largest', 'smallest' or 'magnitude', got {which!r}")
    steps = min(op.dim, max(30, 3 * k)) if num_steps is None else num_steps
    run = lanczos(op, steps, generator=generator, seed=seed, keep_basis=return_eigenvectors)
    values, vectors = run.ritz()
    if which == "largest":
        order = torch.argsort(values, descending=True)
    elif which == "smallest":
        order = torch.argsort(values)
    else:
        order = torch.argsort(values.abs(), descending=True)
    order = order[:k]
    residuals = (run.last_beta * vectors[-1, order]).abs()
    eigenvectors = None
    if return_eigenvectors:
        assert run.basis is not None
        eigenvectors = (vectors[:, order].T.to(run.basis.dtype)) @ run.basis
    return EigenResult(
        eigenvalues=values[order], residuals=residuals, num_steps=int(run.alpha.numel()), eigenvectors=eigenvectors
    )
