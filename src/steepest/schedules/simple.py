"""Linear decay and warmup-stable-decay (WSD), as multiplier functions and as ``LambdaLR`` schedulers."""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def _check_steps(total_steps: int, warmup_steps: int) -> None:
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be an integer in [0, total_steps), got {warmup_steps!r}")


def linear_decay_multiplier(step: int, total_steps: int, warmup_steps: int = 0, final_fraction: float = 0.0) -> float:
    r"""The multiplier of the base learning rate at ``step`` for linear decay with optional linear warmup.

    :math:`(t+1)/W` during the first :math:`W` steps, then :math:`1 - (1-f)\,(t-W)/(T-W)`, reaching
    :math:`f` (``final_fraction``) at :math:`t = T` and staying there. Linear decay to zero is the
    schedule the last-iterate analysis of Defazio et al. (2023, arXiv:2310.07831) recommends in the
    worst case.

    Example:
        >>> [round(linear_decay_multiplier(t, 4), 2) for t in range(5)]
        [1.0, 0.75, 0.5, 0.25, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return 1.0 - (1.0 - final_fraction) * progress


def linear_decay(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, final_fraction: float = 0.0
) -> LambdaLR:
    """A ``LambdaLR`` following :func:`linear_decay_multiplier` (call ``scheduler.step()`` after each step).

    Raises:
        ValueError: ``total_steps < 1``, ``warmup_steps`` outside ``[0, total_steps)`` or
            ``final_fraction`` outside ``[0, 1]``.
    """
    _check_steps(total_steps, warmup_steps)
    if not 0.0 <= final_fraction <= 1.0:
        raise ValueError(f"final_fraction must be in [0, 1], got {final_fraction!r}")
    fn = partial(
        linear_decay_multiplier, total_steps=total_steps, warmup_steps=warmup_steps, final_fraction=final_fraction
    )
    return LambdaLR(optimizer, fn)


def wsd_multiplier(
    step: int, total_steps: int, warmup_steps: int, decay_steps: int, decay_shape: str = "linear"
) -> float:
    r"""Warmup-stable-decay: linear warmup over :math:`W` steps, constant, then a decay to 0 over the last :math:`D`.

    The decay phase with progress :math:`s \in [0, 1]` uses :math:`1-s` (``"linear"``),
    :math:`(1+\cos\pi s)/2` (``"cosine"``) or :math:`1-\sqrt{s}` (``"1-sqrt"``, the shape
    Hägele et al. 2024, arXiv:2405.18392, found best).

    Example:
        >>> [round(wsd_multiplier(t, 6, 1, 2), 2) for t in range(7)]
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_start = total_steps - decay_steps
    if step < decay_start:
        return 1.0
    s = min(1.0, (step - decay_start) / decay_steps)
    if decay_shape == "linear":
        return 1.0 - s
    if decay_shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * s))
    return 1.0 - math.sqrt(s)


def warmup_stable_decay(
    optimizer: Optimizer, total_steps: int, warmup_steps: int, decay_steps: int, decay_shape: str = "linear"
) -> LambdaLR:
    """A ``LambdaLR`` following :func:`wsd_multiplier`.

    Raises:
        ValueError: inconsistent step counts (warmup and decay must fit in ``total_steps``) or an
            unknown ``decay_shape``.
    """
    _check_steps(total_steps, warmup_steps)
    if isinstance(decay_steps, bool) or not isinstance(decay_steps, int) or decay_steps < 1:
        raise ValueError(f"decay_steps must be an integer >= 1, got {decay_steps!r}")
    if warmup_steps + decay_steps > total_steps:
        raise ValueError(
            f"warmup_steps + decay_steps = {warmup_steps + decay_steps} exceeds total_steps = {total_steps}"
        )
    if decay_shape not in DECAY_SHAPES:
        raise ValueError(f"unknown decay_shape {decay_shape!r}; expected one of {DECAY_SHAPES}")
    fn = partial(
        wsd_multiplier,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        decay_steps=decay_steps,
        decay_shape=decay_shape,
    )
    return LambdaLR(optimizer, fn)
