"""Calling a closure for its loss only, whichever way it was written.

The library's closure contract has the closure call ``loss.backward()`` only
``if torch.is_grad_enabled()``, so an optimizer that needs only the loss (a line-search trial
point, a zeroth-order estimate) calls it under ``torch.no_grad()`` and pays a forward pass.
PyTorch's documentation writes closures (for :class:`torch.optim.LBFGS`) that call
``loss.backward()`` unconditionally; under ``torch.no_grad()`` that raises
``RuntimeError: element 0 of tensors does not require grad and does not have a grad_fn``.

:class:`LossOnlyCaller` accepts both. Its first call tries ``torch.no_grad()``; if the closure
raises exactly that error, the caller knows it is a torch-style closure, puts the torch RNG
back where the failed attempt started, and calls it again under ``torch.enable_grad()``; every
later call through the same caller goes straight to ``enable_grad``. So a torch-style closure
gives the same loss values as a documented one, at a cost: one forward pass that stops at its
``backward()`` (once per caller, i.e. once per optimizer step) and a backward pass for every
loss-only evaluation.

Either way ``.grad`` is left as it was: before each call the caller detaches the gradients of
the parameters it guards (sets them to None, holding the tensors), and puts the same tensors
back afterwards, even when the closure raises. A closure that zeroes gradients
(``zero_grad()``, with or without ``set_to_none``) therefore never touches the caller's
gradients, and the gradients a trial computes are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: What ``Tensor.backward`` (and ``torch.autograd.grad``) say about a tensor without a graph.
NO_GRAPH_MESSAGE = "does not require grad and does not have a grad_fn"


def is_backward_without_graph(error: BaseException) -> bool:
    """Whether ``error`` is the one ``backward()`` raises on a loss computed under ``torch.no_grad()``."""
    return isinstance(error, RuntimeError) and NO_GRAPH_MESSAGE in str(error)


@dataclass(frozen=True)
class RNGState:
    """The torch CPU generator state and, when CUDA is initialised, every CUDA device's."""

    cpu: Tensor
    cuda: tuple[Tensor, ...] | None

    @classmethod
    def capture(cls) -> RNGState:
        """Snapshot the global torch generators."""
        cuda = tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self) -> None:
        """Put the global torch generators back to this snapshot."""
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(list(self.cuda))


class LossOnlyCaller:
    """Calls ``closure`` for its loss only, with the documented or a torch-style closure.

    Args:
        closure: the optimizer's closure.
        params: the parameters whose ``.grad`` every call leaves as it found it (the
            optimizer's parameters).

    Attributes:
        backpropagates: None until the first call; then whether the closure calls
            ``backward()`` regardless of grad mode (a torch-style closure).
        forwards: closure calls made, including a first attempt that stopped at ``backward()``.
        backwards: calls made under ``enable_grad`` (each ran the closure's backward pass).
    """

    def __init__(self, closure: Callable[[], Any], params: Sequence[Tensor]) -> None:
        self.closure = closure
        self.params = list(params)
        self.backpropagates: bool | None = None
        self.forwards = 0
        self.backwards = 0

    def __call__(self) -> Any:
        """The closure's loss, as it returned it; ``.grad`` of ``params`` is as before the call."""
        saved = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None
        try:
            if not self.backpropagates:
                rng = RNGState.capture() if self.backpropagates is None else None
                try:
                    self.forwards += 1
                    with torch.no_grad():
                        loss = self.closure()
                except RuntimeError as error:
                    if rng is None or not is_backward_without_graph(error):
                        raise
                    self.backpropagates = True
                    rng.restore()  # the retry draws what the failed attempt drew (dropout masks)
                    for p in self.params:
                        p.grad = None
                else:
                    self.backpropagates = False
                    return loss
            self.forwards += 1
            self.backwards += 1
            with torch.enable_grad():
                return self.closure()
        finally:
            for p, grad in zip(self.params, saved, strict=True):
                p.grad = grad
