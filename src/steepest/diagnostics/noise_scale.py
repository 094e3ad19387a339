r"""The gradient noise scale :math:`\mathcal B_\text{simple}` of McCandlish et al.

Paper: McCandlish, Kaplan, Amodei, OpenAI Dota Team, "An Empirical Model of Large-Batch Training",
2018, arXiv:1812.06162. With true gradient :math:`G` and per-example gradient covariance
:math:`\Sigma`, the simple noise scale is :math:`\mathcal B_\text{simple} = \operatorname{tr}\Sigma / |G|^2`
(Eq. 2.8); it predicts the critical batch size. A minibatch gradient of size :math:`B` has
:math:`\mathbb E|G_B|^2 = |G|^2 + \operatorname{tr}\Sigma / B`, so from the squared norms at two batch
sizes :math:`B_\text{small} < B_\text{big}` (Appendix A.1) the unbiased estimators are

.. math::

    |\mathcal G|^2 &= \frac{B_\text{big}|G_{B_\text{big}}|^2 - B_\text{small}|G_{B_\text{small}}|^2}
                          {B_\text{big} - B_\text{small}}, \qquad
    \mathcal S = \frac{|G_{B_\text{small}}|^2 - |G_{B_\text{big}}|^2}{1/B_\text{small} - 1/B_\text{big}},

and :math:`\mathcal B_\text{simple} \approx \mathcal S / |\mathcal G|^2`. The ratio of two unbiased
estimates is biased, so (as the paper does) :class:`GradientNoiseScale` keeps exponential moving
averages of :math:`|\mathcal G|^2` and :math:`\mathcal S` separately and reports their ratio.

Data-parallel training (the paper's own recipe): :math:`B_\text{small}` is one rank's local batch and
:math:`|G_{B_\text{small}}|^2` the squared norm of its local gradient before the all-reduce;
:math:`B_\text{big}` is the global batch and :math:`|G_{B_\text{big}}|^2` the squared norm after it.
Both norms come for free in DDP; pass them to :meth:`GradientNoiseScale.update` (average the local
squared norms over ranks first, for a lower-variance estimate). On one process,
:func:`gradient_noise_scale` makes the two sizes by splitting a batch into equal chunks.

Differences from the paper: the EMAs are bias-corrected (divided by :math:`1-\beta^t`, as Adam's),
so the first estimate is not shrunk toward zero; the paper does not say how it initializes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from steepest.diagnostics.hvp import LossFn


@dataclass(frozen=True)
class NoiseScaleEstimate:
    r"""Estimates of McCandlish et al.'s quantities.

    Attributes:
        grad_sq_norm: :math:`|\mathcal G|^2`, the estimate of :math:`|G|^2`.
        trace_sigma: :math:`\mathcal S`, the estimate of :math:`\operatorname{tr}\Sigma`.
        b_simple: ``trace_sigma / grad_sq_norm`` (``inf`` when the gradient estimate is <= 0).
        small_batch: :math:`B_\text{small}`.
        big_batch: :math:`B_\text{big}`.
    """

    grad_sq_norm: float
    trace_sigma: float
    b_simple: float
    small_batch: int
    big_batch: int


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("inf")


def noise_scale_from_norms(
    small_sq_norm: float, big_sq_norm: float, small_batch: int, big_batch: int
) -> NoiseScaleEstimate:
    r"""The unbiased estimators of Appendix A.1 from two squared gradient norms.

    Args:
        small_sq_norm: :math:`|G_{B_\text{small}}|^2` (or an average of several such).
        big_sq_norm: :math:`|G_{B_\text{big}}|^2`.
        small_batch: :math:`B_\text{small}` (examples per small-batch gradient, the loss a mean).
        big_batch: :math:`B_\text{big} > B_\text{small}`.

    Raises:
        ValueError: ``small_batch < 1`` or ``big_batch <= small_batch``.

    Example:
        >>> est = noise_scale_from_norms(3.0, 1.5, 2, 8)  # |G|^2 = 1, tr Σ = 4 solve these exactly
        >>> est.grad_sq_norm, est.trace_sigma, est.b_simple
        (1.0, 4.0, 4.0)
    """
    if small_batch < 1 or big_batch <= small_batch:
        raise ValueError(f"need 1 <= small_batch < big_batch, got {small_batch} and {big_batch}")
    grad_sq = (big_batch * big_sq_norm - small_batch * small_sq_norm) / (big_batch - small_batch)
    trace = (small_sq_norm - big_sq_norm) / (1.0 / small_batch - 1.0 / big_batch)
    return NoiseScaleEstimate(grad_sq, trace, _ratio(trace, grad_sq), small_batch, big_batch)


def split_batch(batch: Any, num_chunks: int) -> list[Any]:
    """Split a batch (a tensor, or a tuple/list/dict of tensors sharing dim 0) into equal chunks.

    Raises:
        ValueError: the batch size is not divisible by ``num_chunks``, tensors disagree on dim 0,
            or the batch holds something other than tensors.
    """
    leaves: list[Tensor] = []

    def collect(b: Any) -> None:
        if isinstance(b, Tensor):
            leaves.append(b)
        elif isinstance(b, Mapping):
            for v in b.values():
                collect(v)
        elif isinstance(b, Sequence) and not isinstance(b, str):
            for v in b:
                collect(v)
        else:
            raise ValueError(f"cannot split a batch element of type {type(b).__name__}; pass tensors")

    collect(batch)
    if not leaves:
        raise ValueError("the batch holds no tensors")
    size = leaves[0].shape[0]
    if any(t.shape[0] != size for t in leaves):
        raise ValueError("every tensor in the batch must have the same size along dim 0")
    if num_chunks < 2 or size % num_chunks:
        raise ValueError(f"batch size {size} must be divisible by num_chunks={num_chunks} >= 2")
    chunk = size // num_chunks

    def take(b: Any, i: int) -> Any:
        if isinstance(b, Tensor):
            return b[i * chunk : (i + 1) * chunk]
        if isinstance(b, Mapping):
            return {k: take(v, i) for k, v in b.items()}
        return type(b)(take(v, i) for v in b)

    return [take(batch, i) for i in range(num_chunks)]


def gradient_noise_scale(model: nn.Module, loss_fn: LossFn, batch: Any, num_chunks: int = 4) -> NoiseScaleEstimate:
    r"""Estimate the noise scale from one batch split into ``num_chunks`` small batches.

    The small-batch squared norm is the mean of :math:`|g_c|^2` over the chunk gradients (each an
    unbiased estimate of :math:`|G|^2 + \operatorname{tr}\Sigma/B_\text{small}`), the big-batch
    gradient is their mean (the whole batch's gradient). ``loss_fn(model, batch)`` must return the
    *mean* loss over the examples of the batch it gets. ``.grad`` fields are not touched.

    Raises:
        ValueError: see :func:`split_batch`.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    chunks = split_batch(batch, num_chunks)
    total = [torch.zeros_like(p) for p in params]
    small_sq = 0.0
    for chunk in chunks:
        with torch.enable_grad():
            grads = torch.autograd.grad(loss_fn(model, chunk), params, allow_unused=True)
        for acc, g in zip(total, grads, strict=True):
            if g is not None:
                acc.add_(g)
                small_sq += float(g.double().pow(2).sum())
    big_sq = sum(float((t / num_chunks).double().pow(2).sum()) for t in total)
    small_size = _batch_size(chunks[0])
    return noise_scale_from_norms(small_sq / num_chunks, big_sq, small_size, small_size * num_chunks)


def _batch_size(batch: Any) -> int:
    while not isinstance(batch, Tensor):
        batch = next(iter(batch.values())) if isinstance(batch, Mapping) else batch[0]
    return int(batch.shape[0])


class GradientNoiseScale:
    r"""A training-loop tracker of :math:`\mathcal B_\text{simple}` with EMAs of both estimators.

    Call it as ``tracker(model, loss_fn, batch)`` (splits the batch, see :func:`gradient_noise_scale`)
    or feed it norms you already have with :meth:`update` (the DDP recipe in the module docstring).

    Args:
        num_chunks: small batches per batch for ``__call__`` (default 4).
        beta: EMA factor for :math:`|\mathcal G|^2` and :math:`\mathcal S` (default 0.9).

    Raises:
        ValueError: ``num_chunks < 2`` or ``beta`` outside [0, 1).

    Example:
        >>> gns = GradientNoiseScale(beta=0.5)
        >>> gns.update(3.0, 1.5, 2, 8).b_simple
        4.0
    """

    def __init__(self, num_chunks: int = 4, beta: float = 0.9) -> None:
        if num_chunks < 2:
            raise ValueError(f"num_chunks must be >= 2, got {num_chunks}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.num_chunks, self.beta = num_chunks, beta
        self.steps = 0
        self._grad_sq = 0.0
        self._trace = 0.0

    def update(self, small_sq_norm: float, big_sq_norm: float, small_batch: int, big_batch: int) -> NoiseScaleEstimate:
        """Fold in one pair of squared norms; returns the smoothed estimate."""
        raw = noise_scale_from_norms(small_sq_norm, big_sq_norm, small_batch, big_batch)
        return self._fold(raw)

    def __call__(self, model: nn.Module, loss_fn: LossFn, batch: Any) -> NoiseScaleEstimate:
        """Estimate from ``batch`` (split into ``num_chunks``) and fold it in."""
        return self._fold(gradient_noise_scale(model, loss_fn, batch, self.num_chunks))

    def _fold(self, raw: NoiseScaleEstimate) -> NoiseScaleEstimate:
        self.steps += 1
        self._grad_sq = self.beta * self._grad_sq + (1 - self.beta) * raw.grad_sq_norm
        self._trace = self.beta * self._trace + (1 - self.beta) * raw.trace_sigma
        correction = 1 - self.beta**self.steps
        grad_sq, trace = self._grad_sq / correction, self._trace / correction
        return NoiseScaleEstimate(grad_sq, trace, _ratio(trace, grad_sq), raw.small_batch, raw.big_batch)
