"""signSGD and Signum: steps along the sign of the gradient or of its momentum."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from steepest.optim._base import Capabilities, ParamGroup, SteepestOptimizer
from steepest.optim._functional import (
    add_scaled_,
    decay_weights_,
    foreach_decay_weights_,
    foreach_nan_preserving_sign,
    lerp_,
    nan_preserving_sign,
)


class SignSGD(SteepestOptimizer):
    r"""signSGD: move every coordinate by the learning rate, against the gradient's sign.

    Paper: Bernstein, Wang, Azizzadenesheli, Anandkumar, "signSGD: Compressed Optimisation for
    Non-Convex Problems", ICML 2018, arXiv:1802.04434.

    Update rule (paper, Algorithm 1), with learning rate :math:`\delta`, stochastic gradient
    :math:`\tilde g_k` and decoupled weight decay :math:`\lambda` (ours, see below):

    .. math::

        x_{k+1} = x_k (1 - \delta\lambda) - \delta\, \mathrm{sign}(\tilde g_k)

    Differences from the paper: the paper has no weight decay; ``weight_decay`` is the decoupled
    form :math:`x(1-\delta\lambda)`, which is exactly what the authors' MXNet ``signsgd_update``
    does with its ``wd`` (it never enters the sign). ``sign(0) = 0``, so a coordinate with a zero
    gradient does not move. A non-finite gradient entry (NaN or :math:`\pm\infty`) turns the
    parameter entry into NaN: ``torch.sign`` (and MXNet's kernel) map NaN to 0, which would hide
    a broken gradient from a method that keeps no state.

    State per parameter: none.

    Args:
        params: parameters or param groups.
        lr: :math:`\delta`, default 1e-3 (ours: the paper tunes the lr per task; a sign step moves
            *every* coordinate by :math:`\delta`, so sign methods need lrs about as small as
            Adam's).
        weight_decay: decoupled decay :math:`\lambda`, default 0.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        >>> opt = steepest.SignSGD([w], lr=0.5)
        >>> w.grad = torch.tensor([0.1, -30.0, 0.0])
        >>> _ = opt.step()
        >>> w.detach()
        tensor([ 0.5000, -1.5000,  3.0000])
    """

    capabilities = Capabilities(supports_fused=True)

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, maximize=maximize, foreach=foreach, fused=fused)

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        for param, grad in zip(params, grads, strict=True):
            decay_weights_(param, lr, wd)
            add_scaled_(param, nan_preserving_sign(grad), -lr)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        foreach_decay_weights_(params, lr, wd)
        torch._foreach_add_(params, foreach_nan_preserving_sign(grads), alpha=-lr)


class Signum(SteepestOptimizer):
    r"""Signum: signSGD on an exponential moving average of the gradients (sign momentum).

    Paper: Bernstein, Wang, Azizzadenesheli, Anandkumar, "signSGD: Compressed Optimisation for
    Non-Convex Problems", ICML 2018, arXiv:1802.04434.

    Update rule (paper, Algorithm 3), with learning rate :math:`\delta`, momentum constant
    :math:`\beta`, :math:`m_0 = 0` and decoupled weight decay :math:`\lambda` (ours, see below):

    .. math::

        m_{k+1} &= \beta m_k + (1-\beta)\, \tilde g_k \\
        x_{k+1} &= x_k (1 - \delta\lambda) - \delta\, \mathrm{sign}(m_{k+1})

    No bias correction is needed: the sign does not see the scale of :math:`m`, and on the
    first step :math:`\mathrm{sign}(m_1) = \mathrm{sign}(\tilde g_0)`. :math:`\beta = 0` gives
    signSGD (use :class:`SignSGD`, which keeps no buffer).

    Differences from the paper: the paper has no weight decay. Ours is decoupled,
    :math:`x(1-\delta\lambda)`, which is MXNet's ``wd_lh``. The authors' MXNet ``Signum``
    (``signum_update``) takes two decays: ``wd_lh``, decoupled as here, and the usual optimizer
    ``wd``, which it adds to the gradient *inside* the momentum, :math:`m \leftarrow \beta m +
    (1-\beta)(\tilde g + \lambda x)`, so that decay acts only through the sign; that coupled
    form is not offered here. The momentum update is computed as ``lerp`` (:math:`m + (1-\beta)(\tilde g
    - m)`), equal to the paper's form up to rounding. ``sign(0) = 0``. A non-finite gradient entry
    (NaN or :math:`\pm\infty`) makes the buffer entry non-finite and the parameter entry NaN in the
    same step, as in :class:`SignSGD`: ``torch.sign`` maps NaN to 0, which would freeze the
    coordinate for good behind a NaN buffer, with a finite parameter that hides the broken gradient.

    State per parameter: ``momentum_buffer`` (:math:`m`, like the parameter). No step counter.

    Args:
        params: parameters or param groups.
        lr: :math:`\delta`, default 1e-3 (ours: the paper tunes the lr per task; sign methods
            move every coordinate by :math:`\delta`, so they need small lrs).
        momentum: :math:`\beta`, default 0.9 (the default of the authors' MXNet ``Signum``).
        weight_decay: decoupled decay :math:`\lambda`, default 0.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = steepest.Signum([w], lr=0.5, momentum=0.9)
        >>> w.grad = torch.tensor([1.0, -1.0])
        >>> _ = opt.step()  # m = (0.1, -0.1)
        >>> w.grad = torch.tensor([-0.5, -1.0])
        >>> _ = opt.step()  # m = (0.04, -0.19): the first sign has not flipped yet
        >>> w.detach()
        tensor([ 0., -1.])
    """

    capabilities = Capabilities(supports_fused=True)
    param_state = ("momentum_buffer",)

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, maximize=maximize, foreach=foreach, fused=fused
        )

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, beta, wd = group["lr"], group["momentum"], group["weight_decay"]
        for param, grad, state in zip(params, grads, states, strict=True):
            buf = state["momentum_buffer"]
            lerp_(buf, grad, 1.0 - beta)
            decay_weights_(param, lr, wd)
            add_scaled_(param, nan_preserving_sign(buf), -lr)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, beta, wd = group["lr"], group["momentum"], group["weight_decay"]
        bufs = [s["momentum_buffer"] for s in states]
        torch._foreach_lerp_(bufs, grads, 1.0 - beta)
        foreach_decay_weights_(params, lr, wd)
        torch._foreach_add_(params, foreach_nan_preserving_sign(bufs), alpha=-lr)
