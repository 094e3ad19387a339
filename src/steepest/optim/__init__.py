"""Optimizers, one module per published algorithm, and the registry that lists them."""

from steepest.optim._base import Capabilities, SteepestOptimizer
from steepest.optim._memory import state_bytes
from steepest.optim._registry import (
    FAMILIES,
    REGISTRY,
    Paper,
    RegistryEntry,
    create_optimizer,
    list_optimizers,
    optimizer_info,
)
from steepest.optim.baselines import SGD, AdamW
from steepest.optim.lion import Lion

__all__ = [
    "FAMILIES",
    "REGISTRY",
    "SGD",
    "AdamW",
    "Capabilities",
    "Lion",
    "Paper",
    "RegistryEntry",
    "SteepestOptimizer",
    "create_optimizer",
    "list_optimizers",
    "optimizer_info",
    "state_bytes",
]
