"""Batch-size scaling rules: how the learning rate should follow the batch size.

Linear scaling for SGD (Goyal et al. 2017, arXiv:1706.02677: multiply the learning rate by k when
the batch grows k-fold) and square-root scaling for Adam-like methods (Malladi et al. 2022, "On
the SDEs and Scaling Rules for Adaptive Gradient Algorithms", arXiv:2205.10287).
"""

from __future__ import annotations

import math

from steepest.optim._registry import optimizer_info

#: Registry families whose learning rate scales with the square root of the batch size.
_SQRT_FAMILIES = ("adaptive", "sign", "memory", "layerwise")


def scaling_rule(optimizer: str) -> str:
    """``"linear"`` or ``"sqrt"`` for a registered optimizer: SGD-like methods scale linearly, adaptive ones by sqrt.

    Example:
        >>> scaling_rule("sgd"), scaling_rule("adamw")
        ('linear', 'sqrt')
    """
    entry = optimizer_info(optimizer)
    if entry.key == "adamw" or any(f in entry.families for f in _SQRT_FAMILIES):
        return "sqrt"
    return "linear"


def scale_lr_for_batch_size(lr: float, base_batch_size: int, batch_size: int, rule: str = "linear") -> float:
    """The learning rate for ``batch_size`` given a tuned ``lr`` at ``base_batch_size``.

    Raises:
        ValueError: non-positive batch sizes or an unknown rule.

    Example:
        >>> scale_lr_for_batch_size(0.1, 128, 512), scale_lr_for_batch_size(1e-3, 128, 512, "sqrt")
        (0.4, 0.002)
    """
    if base_batch_size < 1 or batch_size < 1:
        raise ValueError(f"batch sizes must be >= 1, got {base_batch_size} and {batch_size}")
    ratio = batch_size / base_batch_size
    if rule == "linear":
        return lr * ratio
    if rule == "sqrt":
        return lr * math.sqrt(ratio)
    raise ValueError(f"unknown scaling rule {rule!r}; expected 'linear' or 'sqrt'")
