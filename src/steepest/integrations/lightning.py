"""Lightning (``lightning.Trainer``) and Fabric with steepest optimizers.

Lightning's automatic optimization already passes a closure to ``optimizer.step`` (the training
step, ``zero_grad`` and the backward), so closure optimizers (SLS, SPS, PoNoS, MeZO, ...) run as
they should with a plain ``configure_optimizers``. Two things need a hand:

* the Hessian-vector-product methods (AdaHessian, Sophia-H) need ``backward(create_graph=True)``:
  mix :class:`CreateGraphBackward` into the LightningModule (with Fabric, call
  ``fabric.backward(loss, create_graph=True)``);
* optimizers that need names or structured groups (Adam-mini, BlockLLM, GaLore, Fira, FRUGAL,
  SCALE): build them with :func:`configure_optimizer` (``steepest.optimizer_params`` underneath).

Nothing here imports Lightning: these work on any object that has the methods Lightning calls.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from steepest.integrations._build import build_optimizer

__all__ = ["CreateGraphBackward", "configure_optimizer"]

#: ``configure_optimizer(name, module, weight_decay=..., no_decay=..., facts=..., **hyperparameters)``.
configure_optimizer = build_optimizer


def _needs_create_graph(optimizers: Any) -> bool:
    items = optimizers if isinstance(optimizers, list | tuple) else [optimizers]
    for item in items:
        raw = getattr(item, "optimizer", item)  # LightningOptimizer wraps ours
        caps = getattr(raw, "capabilities", None)
        if caps is not None and caps.needs_create_graph:
            return True
    return False


class CreateGraphBackward:
    """LightningModule mixin: ``backward(create_graph=True)`` when an optimizer needs Hessian-vector products.

    Put it before ``LightningModule`` in the bases (``class Model(CreateGraphBackward,
    L.LightningModule)``). For every other optimizer the backward is Lightning's own.
    """

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """``loss.backward(create_graph=True)`` for AdaHessian / Sophia-H, else the parent's backward."""
        if _needs_create_graph(self.optimizers(use_pl_optimizer=False)):  # type: ignore[attr-defined]
            kwargs["create_graph"] = True
        super().backward(loss, *args, **kwargs)  # type: ignore[misc]
