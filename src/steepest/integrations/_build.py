"""Build a registry optimizer for a model in one call (no framework needed)."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim import Optimizer

from steepest.optim._param_groups import NoDecay
from steepest.optim._registry import create_optimizer, optimizer_info, optimizer_params


def build_params(
    name: str, model: nn.Module, weight_decay: float | None, no_decay: NoDecay, facts: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """:func:`steepest.optimizer_params`, with the weight-decay split only where the optimizer has decay.

    ``weight_decay=None`` or 0 for an optimizer without a ``weight_decay`` hyperparameter builds no
    split; a positive decay for one is refused (it would be ignored).
    """
    entry = optimizer_info(name)
    if "weight_decay" in entry.defaults():
        return optimizer_params(name, model, weight_decay=weight_decay, no_decay=no_decay, **facts)
    if weight_decay or no_decay is not None:
        raise ValueError(f"{name}: {entry.cls.__name__} has no weight decay; leave weight_decay at 0")
    return optimizer_params(name, model, **facts)


def build_optimizer(
    name: str,
    model: nn.Module,
    *,
    weight_decay: float | None = None,
    no_decay: NoDecay = None,
    facts: dict[str, Any] | None = None,
    **hyperparameters: Any,
) -> Optimizer:
    """The registry optimizer ``name`` for ``model``: :func:`steepest.optimizer_params`, then :func:`create_optimizer`.

    Names, projected groups and SCALE's roles come from the model (and ``facts``); with
    ``weight_decay``, biases and normalization weights get none (:func:`steepest.param_groups`).

    Example:
        >>> import torch
        >>> from steepest.integrations import build_optimizer
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        >>> opt = build_optimizer("lion", model, weight_decay=0.1, lr=1e-4)
        >>> [g["weight_decay"] for g in opt.param_groups]
        [0.1, 0.0]
    """
    params, extra = build_params(name, model, weight_decay, no_decay, facts or {})
    return create_optimizer(name, params, **{**extra, **hyperparameters})
