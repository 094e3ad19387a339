"""Normalized steepest descent with respect to the l2, l_inf or l1 norm of a whole param group."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from steepest.optim._base import Capabilities, ParamGroup, SteepestOptimizer, device_dtype_buckets
from steepest.optim._functional import (
    add_scaled_,
    decay_weights_,
    foreach_decay_weights_,
    foreach_nan_preserving_sign,
    materialized,
    nan_preserving_sign,
    norm_dtype,
    per_tensor_norms,
)
from steepest.optim._validation import Boolean, OneOf

#: The order of the dual norm ``||g||_*`` of each primal norm: the size of ``<g, d>`` at the optimum.
_DUAL_ORD = {"l2": 2.0, "linf": 1.0, "l1": math.inf}


def _combine(norms: Tensor, ord: float) -> float:
    """The ``ord``-norm of the concatenation, from the per-tensor ``ord``-norms (one host sync)."""
    if ord == math.inf:
        total = norms.amax() if norms.numel() else norms.new_zeros(())
    elif ord == 1.0:
        total = norms.sum()
    else:
        total = torch.linalg.vector_norm(norms)
    return float(total.item())


def _unravel(index: int, shape: torch.Size) -> tuple[int, ...]:
    """Row-major coordinates of the flat ``index`` in a tensor of ``shape``."""
    coords = []
    for size in reversed(shape):
        index, rest = divmod(index, size)
        coords.append(rest)
    return tuple(reversed(coords))


def _l1_step(params: list[Tensor], grads: list[Tensor], maxima: Tensor, lr: float, dual_scaled: bool) -> None:
    """Move the single coordinate with the largest ``|g_i|`` (the first one, in parameter order).

    ``maxima`` holds each tensor's ``max |g|`` in the order of ``params``; ``max`` returns the
    first maximal index, and so does ``argmax`` inside the chosen tensor (row-major). A NaN
    counts as the largest value, so a NaN gradient reaches its parameter.
    """
    if not maxima.numel():
        return
    value, which = maxima.max(0)
    largest, k = value.item(), int(which.item())
    if largest == 0.0:  # zero gradient: every direction is steepest, do not move
        return
    grad = grads[k]
    coord = _unravel(int(torch.argmax(grad.abs()).item()), grad.shape)
    g_i = grad[coord]
    # ||g||_inf * sign(g_i) = g_i; the normalized step is g_i / |g_i| (= sign, NaN stays NaN).
    params[k][coord].add_(g_i if dual_scaled else g_i / g_i.abs(), alpha=-lr)


class NormalizedSD(SteepestOptimizer):
    r"""Normalized steepest descent with respect to a norm of the whole parameter vector.

    Paper: Gunasekar, Lee, Soudry, Srebro, "Characterizing Implicit Bias in Terms of Optimization
    Geometry", ICML 2018, arXiv:1802.08246 (steepest descent with respect to a general norm, and
    its implicit bias). Normalized gradient descent (the l2 case) is analysed on separable data
    by Nacson, Lee, Gunasekar, Savarese, Srebro, Soudry, "Convergence of Gradient Descent on
    Separable Data", AISTATS 2019, arXiv:1803.01905.

    Update rule (Gunasekar et al., Section 4), with :math:`w` all the parameters of a param group
    that have a gradient, flattened and concatenated in parameter order (row-major), gradient
    :math:`g_t = \nabla L(w_t)`, step size :math:`\eta_t` and decoupled weight decay
    :math:`\lambda` (ours):

    .. math::

        \Delta w_t &\in \arg\max_{\|v\| \le 1} \langle g_t, v \rangle \\
        w_{t+1} &= w_t(1 - \eta_t\lambda) - \eta_t\, s_t\, \Delta w_t, \qquad
        s_t = 1 \text{ (normalized) or } \|g_t\|_\star \text{ (``dual_scaled``)}

    with, for each norm, the maximiser and the dual norm :math:`\|\cdot\|_\star`:

    * ``"l2"``: :math:`\Delta w = g/\|g\|_2`, :math:`\|g\|_\star = \|g\|_2` (``dual_scaled``
      is plain gradient descent);
    * ``"linf"``: :math:`\Delta w = \mathrm{sign}(g)`, :math:`\|g\|_\star = \|g\|_1`
      (normalized it is signSGD over the whole group);
    * ``"l1"``: :math:`\Delta w = \mathrm{sign}(g_i)\, e_i` with :math:`i = \arg\max_j |g_j|`,
      :math:`\|g\|_\star = \|g\|_\infty` (greedy coordinate descent: one coordinate per step).

    The paper writes unnormalized steepest descent, :math:`\Delta w_t` scaled by the dual norm
    (``dual_scaled=True``); normalized steepest descent takes steps of length exactly
    :math:`\eta_t` in the chosen norm.

    Choices where the paper is silent: the maximiser is not unique when some :math:`g_j = 0`
    (l_inf) or when several :math:`|g_j|` tie (l1). We take :math:`\mathrm{sign}(0) = 0` and the
    *first* largest coordinate in parameter order (tensors in group order, each row-major).
    A zero gradient does not move the parameters (no NaN). A NaN in the gradient spreads
    to every parameter of the group through the norm (or, for the normalized l_inf step, to its
    own entry; :math:`\mathrm{sign}(\pm\infty)` is NaN too, as in :class:`SignSGD`).
    Parameters without a gradient are left out of :math:`w`. Weight decay is ours (none in
    the paper).

    State per parameter: none.

    Args:
        params: parameters or param groups. The norm is over each param group separately.
        lr: :math:`\eta`, default 0.1 (ours; the paper has none). It is the length of the
            step in the chosen norm, so its scale depends on the norm and on the model: with l2
            it is the length of the whole group's step; l_inf moves *every* coordinate by
            ``lr`` (use an lr like :class:`SignSGD`'s, about 1e-3); l1 moves one coordinate.
        weight_decay: decoupled decay :math:`\lambda`, default 0.
        norm: ``"l2"`` (default), ``"linf"`` or ``"l1"``.
        dual_scaled: scale the step by the dual norm of the gradient (unnormalized steepest
            descent), default False.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the update over the whole group (:mod:`steepest.optim._fused`; ``None``, the
            default: not fused). The l2 and l_inf steps fuse, with the
            dual norm kept on the device; the l1 step moves one coordinate, not an elementwise
            pass, and keeps the foreach path.

    Requirements: gradients only; no closure. The norm couples all parameters of a group, so
    the eager step reads one scalar from the device per group (for l1: the largest entry and
    its place); the fused step reads none.

    Example:
        >>> import torch, steepest
        >>> a = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> b = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = steepest.NormalizedSD([a, b], lr=1.0)  # l2 over a and b together
        >>> a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
        >>> _ = opt.step()
        >>> a.detach(), b.detach()
        (tensor([0.4000, 1.0000]), tensor([0.2000]))
        >>> opt = steepest.NormalizedSD([a, b], lr=0.5, norm="l1")  # one coordinate: b's
        >>> _ = opt.step()
        >>> a.detach(), b.detach()
        (tensor([0.4000, 1.0000]), tensor([-0.3000]))
    """

    capabilities = Capabilities(global_statistic=True, supports_fused=True)
    foreach_whole_group = True
    hyperparameter_rules = MappingProxyType({"norm": OneOf(("l2", "linf", "l1")), "dual_scaled": Boolean()})

    def __init__(
        self,
        params: Any,
        lr: float = 0.1,
        weight_decay: float = 0.0,
        *,
        norm: str = "l2",
        dual_scaled: bool = False,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            weight_decay=weight_decay,
            norm=norm,
            dual_scaled=dual_scaled,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )

    def fused_applies(self, group: ParamGroup) -> bool:
        """The l2 and l_inf steps are elementwise passes; the l1 step updates one coordinate."""
        return bool(group["norm"] != "l1")

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        if torch.compiler.is_compiling():
            self._compiled_update(group, params, grads)
            return
        lr, wd, norm, dual_scaled = group["lr"], group["weight_decay"], group["norm"], group["dual_scaled"]
        for param in params:
            decay_weights_(param, lr, wd)
        if norm == "l1":
            maxima = torch.stack([_tensor_norm(g, math.inf, params[0].device) for g in grads])
            _l1_step(params, grads, maxima, lr, dual_scaled)
            return
        if norm == "l2" and dual_scaled:  # lr * ||g||_2 * g / ||g||_2: gradient descent
            for param, grad in zip(params, grads, strict=True):
                param.add_(grad, alpha=-lr)
            return
        if norm == "linf" and not dual_scaled:  # sign(g): needs no statistic
            for param, grad in zip(params, grads, strict=True):
                param.add_(nan_preserving_sign(grad), alpha=-lr)
            return
        ord = _DUAL_ORD[norm]
        dual = _combine(torch.stack([_tensor_norm(g, ord, params[0].device) for g in grads]), ord)
        if norm == "l2":  # g / ||g||_2
            if dual == 0.0:
                return
            for param, grad in zip(params, grads, strict=True):
                param.add_(grad, alpha=-lr / dual)
        else:  # linf, dual-scaled: ||g||_1 * sign(g)
            for param, grad in zip(params, grads, strict=True):
                param.add_(nan_preserving_sign(grad), alpha=-lr * dual)

    @staticmethod
    def _compiled_update(group: ParamGroup, params: list[Tensor], grads: list[Tensor]) -> None:
        """The l2 and l_inf steps as tensor math, for the fused path: the dual norm stays on the device.

        Same arithmetic as the eager loop (per-tensor norms combined in float64), with the host
        branch on a zero norm replaced by a zero step size.
        """
        lr, wd, norm, dual_scaled = group["lr"], group["weight_decay"], group["norm"], group["dual_scaled"]
        for param in params:
            decay_weights_(param, lr, wd)
        if norm == "l2" and dual_scaled:
            for param, grad in zip(params, grads, strict=True):
                add_scaled_(param, grad, -lr)
            return
        if norm == "linf" and not dual_scaled:
            for param, grad in zip(params, grads, strict=True):
                add_scaled_(param, nan_preserving_sign(grad), -lr)
            return
        ord = _DUAL_ORD[norm]
        norms = torch.stack(
            [torch.linalg.vector_norm(g, ord, dtype=norm_dtype(g)).to(torch.float64).reshape(()) for g in grads]
        )
        if norm == "l2":  # g / ||g||_2, no move for a zero gradient (NaN and inf propagate as eagerly)
            dual = torch.linalg.vector_norm(norms)
            step = materialized(torch.where(dual == 0.0, torch.zeros_like(dual), -lr / dual))
            for param, grad in zip(params, grads, strict=True):
                param.add_(grad * step)
        else:  # linf, dual-scaled: ||g||_1 * sign(g)
            step = materialized(-lr * norms.sum())
            for param, grad in zip(params, grads, strict=True):
                param.add_(nan_preserving_sign(grad) * step)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        """Called with the whole group; splits it into (device, dtype) buckets itself."""
        lr, wd, norm, dual_scaled = group["lr"], group["weight_decay"], group["norm"], group["dual_scaled"]
        buckets = device_dtype_buckets(params, grads, states)
        for bucket_params, _, _ in buckets:
            foreach_decay_weights_(bucket_params, lr, wd)
        if norm == "l1":
            _l1_step(params, grads, per_tensor_norms(grads, math.inf), lr, dual_scaled)
            return
        if norm == "l2" and dual_scaled:
            for bucket_params, bucket_grads, _ in buckets:
                torch._foreach_add_(bucket_params, bucket_grads, alpha=-lr)
            return
        if norm == "linf" and not dual_scaled:
            for bucket_params, bucket_grads, _ in buckets:
                torch._foreach_add_(bucket_params, foreach_nan_preserving_sign(bucket_grads), alpha=-lr)
            return
        ord = _DUAL_ORD[norm]
        dual = _combine(per_tensor_norms(grads, ord), ord)
        if norm == "l2":
            if dual == 0.0:
                return
            for bucket_params, bucket_grads, _ in buckets:
                torch._foreach_add_(bucket_params, bucket_grads, alpha=-lr / dual)
        else:
            for bucket_params, bucket_grads, _ in buckets:
                torch._foreach_add_(bucket_params, foreach_nan_preserving_sign(bucket_grads), alpha=-lr * dual)


def _tensor_norm(grad: Tensor, ord: float, device: torch.device) -> Tensor:
    """``||grad||_ord`` in float32-or-wider, as a float64 0-dim tensor on ``device`` (0 if empty)."""
    if not grad.numel():
        return torch.zeros((), dtype=torch.float64, device=device)
    dtype = torch.promote_types(grad.dtype, torch.float32)
    return torch.linalg.vector_norm(grad, ord, dtype=dtype).to(device=device, dtype=torch.float64)
