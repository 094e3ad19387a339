"""Arithmetic on pytrees of tensors (a tensor, or dicts / lists / tuples of tensors).

Inner variables ``y`` and hyperparameters ``x`` may be any such tree; ``torch.func`` transforms
accept and return the same structures, so the solvers below only need these few operations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

#: A tensor or a nested dict / list / tuple of tensors.
Tree = Any


def leaves(tree: Tree) -> list[Tensor]:
    """The tensors of ``tree`` in a fixed order."""
    return [t for t in pytree.tree_leaves(tree) if isinstance(t, Tensor)]


def tree_map(fn: Any, *trees: Tree) -> Tree:
    """Apply ``fn`` leafwise over trees of the same structure."""
    return pytree.tree_map(fn, *trees)


def add(a: Tree, b: Tree, alpha: float | Tensor = 1.0) -> Tree:
    """``a + alpha * b``."""
    return pytree.tree_map(lambda u, v: u + alpha * v, a, b)


def sub(a: Tree, b: Tree) -> Tree:
    """``a - b``."""
    return pytree.tree_map(lambda u, v: u - v, a, b)


def scale(a: Tree, alpha: float | Tensor) -> Tree:
    """``alpha * a``."""
    return pytree.tree_map(lambda u: alpha * u, a)


def zeros_like(a: Tree) -> Tree:
    """A tree of zeros shaped like ``a``."""
    return pytree.tree_map(torch.zeros_like, a)


def detach(a: Tree) -> Tree:
    """A detached copy of every leaf (no graph, no ``requires_grad``)."""
    return pytree.tree_map(lambda u: u.detach().clone(), a)


def dot(a: Tree, b: Tree) -> Tensor:
    """Sum over leaves of the elementwise products (a 0-dim tensor)."""
    terms = [(u * v).sum() for u, v in zip(leaves(a), leaves(b), strict=True)]
    return torch.stack(terms).sum()


def norm(a: Tree) -> Tensor:
    """Euclidean norm of all leaves taken together (a 0-dim tensor)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(u) for u in leaves(a)]))
