"""Exact byte counts of the tensors alive during a computation (CPU or GPU, no allocator needed).

``torch.autograd.graph.saved_tensors_hooks`` cannot be used here: ``torch.func.grad``/``vjp`` refuse
to run under them. Instead a ``TorchDispatchMode`` sees every tensor an operator returns (including
those inside ``torch.func`` transforms), and weak references tell when each storage is released.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode


class LiveTensorBytes(TorchDispatchMode):
    """A dispatch mode that tracks the bytes of the storages created inside it and still alive.

    ``current`` is the live total, ``peak`` its maximum over the mode's lifetime. Storages are
    counted once however many views share them; tensors created before entering are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._owners: dict[int, list[int]] = {}  # data_ptr -> [nbytes, live tensor objects]

    def _release(self, ptr: int) -> None:
        entry = self._owners.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._owners[ptr]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if not isinstance(t, Tensor):
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if ptr == 0:
                continue
            entry = self._owners.get(ptr)
            if entry is None:
                self._owners[ptr] = [nbytes, 1]
                self.current += nbytes
                self.peak = max(self.peak, self.current)
            else:
                entry[1] += 1
            weakref.finalize(t, self._release, ptr)
        return out


def peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes of tensor storage created and held at once while ``fn()`` runs."""
    with LiveTensorBytes() as mode:
        fn()
    return mode.peak
