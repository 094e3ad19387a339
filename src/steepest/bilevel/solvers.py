"""Linear solvers for the adjoint system ∇²_yy g·v = ∇_y f, over pytrees and matrix-free."""

from __future__ import annotations

from dataclasses import dataclass

from steepest.bilevel import _tree as tree
from steepest.bilevel._derivatives import LinearMap
from steepest.bilevel._tree import Tree


@dataclass(frozen=True)
class LinearSolve:
    """The result of a matrix-free linear solve ``A v = b``.

    Attributes:
        solution: the approximate solution ``v`` (a tree shaped like ``b``).
        residual_norm: ‖b − A v‖ at the returned ``v`` (recurrence value for CG, recomputed for Neumann).
        iterations: matrix-vector products with ``A`` spent.
    """

    solution: Tree
    residual_norm: float
    iterations: int


def conjugate_gradient(
    matvec: LinearMap, b: Tree, x0: Tree | None = None, *, tol: float = 1e-10, max_iter: int = 100
) -> LinearSolve:
    r"""Conjugate gradient for a symmetric positive definite ``A`` given as ``matvec``.

    Hestenes and Stiefel, "Methods of conjugate gradients for solving linear systems", 1952; used for
    hypergradients by HOAG (Pedregosa, arXiv:1602.02355) and iMAML (Rajeswaran et al., arXiv:1909.04630).

    Stops when the residual norm ‖b − A v‖ is at most ``tol`` (absolute) or after ``max_iter``
    products with ``A``. ``x0`` warm-starts the iteration (default zeros).

    Example:
        >>> import torch
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> out = conjugate_gradient(lambda v: A @ v, torch.tensor([1.0, 2.0], dtype=torch.float64))
        >>> out.iterations, torch.allclose(A @ out.solution, torch.tensor([1.0, 2.0], dtype=torch.float64))
        (2, True)
    """
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    iterations = 0
    if x0 is None:
        v = tree.zeros_like(b)
        r = b
    else:
        v = x0
        r = tree.sub(b, matvec(x0))
        iterations += 1
    p = r
    rs = tree.dot(r, r)
    while iterations < max_iter and float(rs.sqrt()) > tol:
        ap = matvec(p)
        iterations += 1
        curvature = tree.dot(p, ap)
        if float(curvature) <= 0.0:  # not positive definite along p (or p = 0 in floating point): stop
            break
        alpha = rs / curvature
        v = tree.add(v, p, alpha)
        r = tree.add(r, ap, -alpha)
        rs_new = tree.dot(r, r)
        p = tree.add(r, p, rs_new / rs)
        rs = rs_new
    return LinearSolve(v, float(rs.sqrt()), iterations)


def neumann_series(matvec: LinearMap, b: Tree, *, step: float, terms: int) -> LinearSolve:
    r"""Truncated Neumann series :math:`A^{-1} b \approx \eta \sum_{k=0}^{K} (I - \eta A)^k b`.

    Lorraine, Vicol, Duvenaud, "Optimizing Millions of Hyperparameters by Implicit Differentiation",
    AISTATS 2020, arXiv:1911.02590. It converges when ``0 < step < 2 / λ_max(A)`` (and ``A`` is positive
    definite); the error after ``K`` terms is ``(I − ηA)^{K+1} A^{-1} b``. ``terms`` = K costs K products
    with ``A``; one more product is spent to report the residual.

    Example:
        >>> import torch
        >>> A = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> out = neumann_series(lambda v: A @ v, torch.ones(2, dtype=torch.float64), step=0.5, terms=60)
        >>> out.solution
        tensor([0.5000, 1.0000], dtype=torch.float64)
    """
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    if terms < 0:
        raise ValueError(f"terms must be >= 0, got {terms}")
    term = tree.scale(b, step)
    v = term
    for _ in range(terms):
        term = tree.add(term, matvec(term), -step)
        v = tree.add(v, term)
    residual = tree.norm(tree.sub(b, matvec(v)))
    return LinearSolve(v, float(residual), terms + 1)
