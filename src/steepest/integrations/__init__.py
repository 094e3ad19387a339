"""Thin adapters between steepest and the training frameworks people use.

Each submodule imports its framework when it is imported itself, never before: ``import steepest``
and ``import steepest.integrations`` load none of them.

* :mod:`steepest.integrations.huggingface`: ``transformers.Trainer`` (``optimizer_cls_and_kwargs``
  for any registry entry, and :class:`~steepest.integrations.huggingface.SteepestTrainer` for closure
  optimizers and Sophia-G's Hessian refresh).
* :mod:`steepest.integrations.lightning`: Lightning and Fabric (a ``backward`` mixin for the
  optimizers that need ``create_graph=True``, and ``configure_optimizers`` from the registry).
* :mod:`steepest.integrations.timm`: register steepest's optimizers with timm's optimizer factory.

:func:`build_optimizer` (any registry entry for a model, in one call) and weight-decay groups
(:func:`steepest.param_groups`: no decay on biases and norms) need no framework.
"""

from steepest.integrations._build import build_optimizer

__all__ = ["build_optimizer"]
