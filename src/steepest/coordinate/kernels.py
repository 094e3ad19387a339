"""Kernels for the SVM dual and an LRU cache of kernel rows (libsvm keeps one of columns, the same here)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

KernelFn = Callable[[Tensor, Tensor], Tensor]


def linear_kernel(a: Tensor, b: Tensor) -> Tensor:
    r""":math:`K(a, b) = a^\top b` for every row pair, shape ``(len(a), len(b))``."""
    return a @ b.T


def rbf_kernel(gamma: float) -> KernelFn:
    r"""The RBF kernel :math:`K(a, b) = \exp(-\gamma\|a - b\|^2)` as a function of two row batches."""
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * (a @ b.T)
        return torch.exp(-gamma * sq.clamp_min(0.0))

    return kernel


class KernelCache:
    """Rows of the kernel matrix K(X, X) on demand, with a least-recently-used cache.

    A :class:`~steepest.coordinate.objectives.RowProvider`. Requested rows that are missing are computed
    together in one batched kernel call; when the cache is full the least recently used rows are
    evicted. The diagonal is computed once. The cache never holds more than ``cache_bytes`` of rows
    (at least two rows, since a pair step needs two).

    Args:
        X: data, shape ``(n, d)``.
        kernel: maps two row batches to their kernel block.
        cache_bytes: memory for cached rows (default 200 MB, scikit-learn's ``cache_size``).

    Attributes:
        misses: rows computed so far; hits: rows served from the cache.

    Example:
        >>> import torch
        >>> cache = KernelCache(torch.eye(3), linear_kernel)
        >>> cache.rows(torch.tensor([2, 0]))
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
    """

    def __init__(self, X: Tensor, kernel: KernelFn, cache_bytes: int = 200 * 2**20) -> None:
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {tuple(X.shape)}")
        self.X = X
        self.kernel = kernel
        n = int(X.shape[0])
        row_bytes = n * X.element_size()
        self.capacity = max(2, min(n, cache_bytes // max(row_bytes, 1)))
        self._slab = torch.empty(self.capacity, n, dtype=X.dtype)
        self._slot: OrderedDict[int, int] = OrderedDict()
        self._free = list(range(self.capacity - 1, -1, -1))
        self._diag = torch.cat([kernel(X[k : k + 1024], X[k : k + 1024]).diagonal() for k in range(0, n, 1024)])
        self.misses = 0
        self.hits = 0

    @property
    def n(self) -> int:
        """The number of data points."""
        return int(self.X.shape[0])

    def diagonal(self) -> Tensor:
        """K_ii for every i."""
        return self._diag

    def rows(self, idx: Tensor) -> Tensor:
        """K[idx], shape ``(len(idx), n)``, computing only the rows not in the cache."""
        wanted: list[int] = idx.tolist()
        if len(set(wanted)) > self.capacity:  # more than fits: compute without caching
            self.misses += len(wanted)
            return self.kernel(self.X[idx], self.X)
        missing = []
        for t in wanted:
            if t in self._slot:
                self._slot.move_to_end(t)
                self.hits += 1
            elif t not in missing:
                missing.append(t)
        if missing:
            self.misses += len(missing)
            block = self.kernel(self.X[torch.tensor(missing)], self.X)
            for t, row in zip(missing, block, strict=True):
                slot = self._free.pop() if self._free else self._slot.popitem(last=False)[1]
                self._slab[slot] = row
                self._slot[t] = slot
        slots = [self._slot[t] for t in wanted]
        if len(slots) == 2:  # the common pair case, without building an index tensor
            return torch.stack((self._slab[slots[0]], self._slab[slots[1]]))
        return self._slab[torch.tensor(slots)]
