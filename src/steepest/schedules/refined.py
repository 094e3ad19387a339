r"""The refined schedule of Defazio, Cutkosky, Mehta, Mishchenko (2023), from recorded gradient norms.

"When, Why and How Much? Adaptive Learning Rate Scheduling by Refinement", arXiv:2310.07831.
Their last-iterate bound for a schedule :math:`\eta_t` is minimised, given the gradient norms
:math:`\|g_t\|` of a previous run of :math:`T` steps, by

.. math::

    w_t \propto \|g_t\|^{-2} \sum_{p=t+1}^{T} \|g_p\|^{-2}

for SGD (their Algorithm 1); for coordinate-wise methods such as Adam and sign descent the
:math:`\ell_1` norm of the gradient with power :math:`-1` takes the place of the squared
:math:`\ell_2` norm (their Algorithm 2; here ``power=1``). The norms are first smoothed by a
median filter of width :math:`\tau T` (nearest-value padding), and the weights are normalised
so their maximum is 1; the schedule then multiplies the tuned peak learning rate. Constant
gradient norms give exactly linear decay, :math:`w_t = (T - t)/(T - 1)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def median_filter(values: Tensor, width: int) -> Tensor:
    """Running median over a centred window of ``width`` entries (odd widths; nearest-value padding).

    Example:
        >>> median_filter(torch.tensor([1.0, 9.0, 2.0, 3.0]), 3).tolist()
        [1.0, 2.0, 3.0, 3.0]
    """
    if width <= 1:
        return values.clone()
    half = width // 2
    padded = torch.cat([values[:1].expand(half), values, values[-1:].expand(half)])
    windows = padded.unfold(0, 2 * half + 1, 1)
    # torch.median returns the lower median for even counts; windows here have odd length.
    return windows.median(dim=1).values


def refined_multipliers(grad_norms: Sequence[float] | Tensor, tau: float = 0.0, power: int = 2) -> Tensor:
    r"""Learning-rate multipliers :math:`w_1..w_T` (max 1, float64) refined from a run's gradient norms.

    Args:
        grad_norms: :math:`\|g_t\|` per step of a previous run (``\ell_2`` for SGD, ``\ell_1`` for
            Adam-like methods), positive.
        tau: smoothing: the median filter spans ``max(1, round(tau * T))`` steps (made odd); 0 means
            none. The paper smooths noisy recordings before refining.
        power: 2 for SGD (Algorithm 1), 1 for coordinate-wise methods (Algorithm 2).

    Raises:
        ValueError: fewer than two norms, a non-positive or non-finite norm, ``tau < 0`` or
            ``power`` not 1 or 2.

    Example:
        >>> refined_multipliers([1.0, 1.0, 1.0, 1.0]).tolist()  # constant norms: linear decay
        [1.0, 0.6666666666666666, 0.3333333333333333, 0.0]
    """
    norms = torch.as_tensor(grad_norms, dtype=torch.float64).flatten()
    if norms.numel() < 2:
        raise ValueError("refined_multipliers needs the gradient norms of at least two steps")
    if not bool(torch.isfinite(norms).all()) or bool((norms <= 0).any()):
        raise ValueError("gradient norms must be positive and finite")
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau!r}")
    if power not in (1, 2):
        raise ValueError(f"power must be 1 (coordinate-wise methods) or 2 (SGD), got {power!r}")
    width = max(1, round(tau * norms.numel()))
    smoothed = median_filter(norms, width + 1 - width % 2)
    inv = smoothed.pow(-power)
    # tail[t] = sum_{p > t} inv[p]
    tail = inv.flip(0).cumsum(0).flip(0) - inv
    weights = inv * tail
    return weights / weights.max()


def refined_schedule(
    optimizer: Optimizer, grad_norms: Sequence[float] | Tensor, tau: float = 0.0, power: int = 2
) -> LambdaLR:
    """A ``LambdaLR`` applying :func:`refined_multipliers` step by step (the last value after the end)."""
    weights = refined_multipliers(grad_norms, tau=tau, power=power).tolist()
    last = len(weights) - 1
    return LambdaLR(optimizer, lambda step: weights[min(step, last)])
