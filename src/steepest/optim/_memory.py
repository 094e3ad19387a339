"""Exact accounting of optimizer state memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor
from torch.optim import Optimizer


def _tensors(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def state_bytes(optimizer: Optimizer) -> int:
    """Bytes held by the optimizer's state tensors (each storage counted once).

    Parameters and gradients are not counted: this is what the optimizer adds on top of
    the model. Example:

    >>> import torch, steepest
    >>> w = torch.nn.Parameter(torch.zeros(10))
    >>> opt = steepest.Lion([w])
    >>> w.grad = torch.ones(10)
    >>> _ = opt.step()
    >>> steepest.state_bytes(opt)  # one float32 momentum of 10 entries
    40
    """
    seen: set[tuple[int, int]] = set()  # (address, bytes) of each storage view counted
    total = 0
    for tensor in _tensors(list(optimizer.state.values())):
        nbytes = int(tensor.numel()) * tensor.element_size()
        address = tensor.untyped_storage().data_ptr() + int(tensor.storage_offset()) * tensor.element_size()
        key = (address, nbytes)
        if nbytes and key in seen:
            continue
        seen.add(key)
        total += nbytes
    return total
