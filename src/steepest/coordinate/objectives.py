"""Objectives for the coordinate solvers: quadratics served by rows, and smooth functions through autograd."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class RowProvider(Protocol):
    """Rows of a symmetric matrix Q on demand (a kernel cache, a dense matrix, ...)."""

    @property
    def n(self) -> int:
        """The dimension of Q."""
        ...

    def rows(self, idx: Tensor) -> Tensor:
        """``Q[idx]``, shape ``(len(idx), n)``; for symmetric Q these are also the columns."""
        ...

    def diagonal(self) -> Tensor:
        """The diagonal of Q, shape ``(n,)``."""
        ...


class DenseRows:
    """A :class:`RowProvider` over a dense symmetric matrix held in memory."""

    def __init__(self, matrix: Tensor) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"Q must be a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix

    @property
    def n(self) -> int:
        """The dimension of Q."""
        return int(self.matrix.shape[0])

    def rows(self, idx: Tensor) -> Tensor:
        """``Q[idx]``."""
        return self.matrix.index_select(0, idx)

    def diagonal(self) -> Tensor:
        """The diagonal of Q."""
        return self.matrix.diagonal()


class QuadraticObjective:
    r"""The quadratic :math:`f(x) = \tfrac12 x^\top Q x + p^\top x` with symmetric Q.

    Q is given densely (a tensor) or through a :class:`RowProvider` (e.g. a kernel cache), so the
    solvers only touch the rows of the coordinates they move and keep the gradient up to date with
    :math:`g \leftarrow g + Q_{:,S}\, d_S`.

    Args:
        Q: symmetric matrix, shape ``(n, n)``, or a row provider.
        p: linear term, shape ``(n,)``.

    Example:
        >>> import torch
        >>> f = QuadraticObjective(torch.eye(2), torch.tensor([1.0, -1.0]))
        >>> f.value(torch.tensor([1.0, 1.0]))
        tensor(1.)
    """

    def __init__(self, Q: Tensor | RowProvider, p: Tensor) -> None:
        self.Q: RowProvider = DenseRows(Q) if isinstance(Q, Tensor) else Q
        if p.ndim != 1 or p.shape[0] != self.Q.n:
            raise ValueError(f"p must have shape ({self.Q.n},), got {tuple(p.shape)}")
        self.p = p

    @property
    def n(self) -> int:
        """The number of variables."""
        return self.Q.n

    def gradient(self, x: Tensor) -> Tensor:
        """:math:`Qx + p`, reading only the rows where x is nonzero."""
        support = torch.nonzero(x).flatten()
        g = self.p.clone()
        if support.numel():
            g += self.Q.rows(support).T @ x[support]
        return g

    def value(self, x: Tensor, grad: Tensor | None = None) -> Tensor:
        r"""f(x); with the gradient at x given, :math:`\tfrac12 x^\top(g + p)` costs O(n)."""
        g = self.gradient(x) if grad is None else grad
        return 0.5 * torch.dot(x, g + self.p)


class SmoothObjective:
    """A smooth function of a vector, differentiated by autograd.

    Args:
        fn: maps a 1-D tensor x to a scalar tensor f(x) (built from torch ops).

    Example:
        >>> import torch
        >>> f = SmoothObjective(lambda x: (x**2).sum())
        >>> f.gradient(torch.tensor([1.0, -2.0]))
        tensor([ 2., -4.])
    """

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def value(self, x: Tensor) -> Tensor:
        """f(x), without a graph."""
        with torch.no_grad():
            return self.fn(x)

    def gradient(self, x: Tensor) -> Tensor:
        """The gradient of f at x."""
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.fn(z), z)
        return g.detach()
