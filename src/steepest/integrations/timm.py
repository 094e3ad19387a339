"""Register steepest's optimizers with timm's optimizer factory (``timm.optim.create_optimizer_v2``).

Importing this module does not import timm; :func:`register` does (timm needs torchvision).

timm looks an optimizer up by the part of its name after the last ``_`` (``lookahead_adamw`` is
Lookahead around ``adamw``), so ``steepest_lion`` would silently give timm's own Lion. The names
registered here have no ``_``: ``"steepest"`` and the registry key with its underscores dropped
(``steepestlion``, ``steepestadammini``, ``steepestgaloreadamw``, ...; :func:`timm_name`), which
no timm optimizer uses, and ``lookahead_steepestlion`` works as timm's other Lookahead names do.

timm passes ``weight_decay`` to every optimizer it creates (and, from a model, builds its own
decay / no-decay groups), so only the optimizers that take ``weight_decay`` are registered. For
those that need parameter names or structured groups (Adam-mini, BlockLLM, GaLore, Fira, FRUGAL,
SCALE) give timm the groups: ``create_optimizer_v2(model, "steepestadammini",
param_group_fn=lambda m: steepest.optimizer_params("adam_mini", m, weight_decay=0.05)[0])``.
"""

from __future__ import annotations

from typing import Any

from steepest.optim._registry import REGISTRY

__all__ = ["register", "timm_name"]

#: The prefix of every name registered with timm.
PREFIX = "steepest"


def timm_name(key: str) -> str:
    """The timm name of the registry entry ``key``: ``steepest`` + the key without underscores."""
    return PREFIX + key.replace("_", "").lower()


def register(registry: Any = None) -> list[str]:
    """Register every steepest optimizer that takes ``weight_decay`` with timm's optimizer factory.

    Args:
        registry: a ``timm.optim.OptimizerRegistry``; default timm's own (the one
            ``timm.optim.create_optimizer_v2`` uses).

    Returns:
        The timm names registered (see :func:`timm_name`), in registry order. Registering twice
        replaces the entries with equal ones.

    Raises:
        ValueError: a name timm already holds for an optimizer that is not steepest's (the
            lookup would be ambiguous).
    """
    from timm.optim import OptimInfo  # imported here: timm needs torchvision

    if registry is None:
        from timm.optim import _optim_factory

        registry = _optim_factory.default_registry
    names = []
    for key, entry in REGISTRY.items():
        defaults = entry.defaults()
        if "weight_decay" not in defaults:
            continue
        name = timm_name(key)
        existing = registry._optimizers.get(name)
        if existing is not None and getattr(existing, "opt_class", None) is not entry.cls:
            raise ValueError(f"timm already has an optimizer named {name!r}: {existing.opt_class!r}")
        betas = defaults.get("betas")
        registry.register(
            OptimInfo(
                name=name,
                opt_class=entry.cls,
                description=f"steepest {key}: {entry.paper.cite()}",
                has_eps="eps" in defaults,
                has_momentum="momentum" in defaults,
                has_betas=betas is not None,
                num_betas=len(betas) if isinstance(betas, tuple) else 2,
                second_order=entry.capabilities.needs_create_graph,
            )
        )
        names.append(name)
    if len(set(names)) != len(names):
        raise AssertionError("two registry keys give the same timm name")
    return names
