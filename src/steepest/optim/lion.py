"""Lion: evolved sign momentum."""

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
    lerp,
    lerp_,
    nan_preserving_sign,
)


class Lion(SteepestOptimizer):
    r"""Lion (EvoLved Sign Momentum).

    Paper: Chen, Liang, Huang, Real, Wang, Pham, Dong, Luong, Hsieh, Lu, Le,
    "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023, arXiv:2302.06675.

    Update rule (paper, Program 1), with gradient :math:`g_t`:

    .. math::

        c_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        \theta_t &= \theta_{t-1}(1 - \eta\lambda) - \eta\,\mathrm{sign}(c_t) \\
        m_t &= \beta_2 m_{t-1} + (1-\beta_2) g_t

    Differences from the paper: none in the math. As in the official code (google/automl),
    the decoupled decay multiplies by :math:`(1-\eta\lambda)` with the *current* lr (not
    lucidrains' optional ``wd / lr_0`` variant), and ``sign(0) = 0`` so a coordinate with
    :math:`c_t = 0` does not move. A non-finite gradient entry (NaN or :math:`\pm\infty`) makes
    :math:`c_t` non-finite there and the parameter entry NaN in the same step (and :math:`m`
    non-finite), as in every sign method here: ``torch.sign`` maps NaN to 0, which would freeze
    the coordinate for good behind a NaN :math:`m`, with a finite parameter that hides the broken
    gradient.

    State per parameter: ``exp_avg`` (:math:`m`, like the parameter). No step counter.

    Args:
        params: parameters or param groups.
        lr: step size :math:`\eta`. Default 1e-4 (official code). The paper suggests an lr
            3-10x smaller than AdamW's.
        betas: :math:`(\beta_1, \beta_2)`, default (0.9, 0.99) (paper, official code).
        weight_decay: decoupled decay :math:`\lambda`, default 0. The paper suggests a value
            3-10x larger than AdamW's, keeping :math:`\eta\lambda` similar.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes, unless fused).
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = steepest.Lion([w], lr=0.1)
        >>> w.grad = torch.tensor([0.5, -0.5])
        >>> _ = opt.step()
        >>> w.detach()
        tensor([ 0.9000, -1.9000])
    """

    capabilities = Capabilities(supports_fused=True)
    param_state = ("exp_avg",)

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params, lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize, foreach=foreach, fused=fused
        )

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        for param, grad, state in zip(params, grads, states, strict=True):
            exp_avg = state["exp_avg"]
            decay_weights_(param, lr, wd)
            interpolated = lerp(exp_avg, grad, 1.0 - beta1)
            add_scaled_(param, nan_preserving_sign(interpolated), -lr)
            lerp_(exp_avg, grad, 1.0 - beta2)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        exp_avgs = [s["exp_avg"] for s in states]
        foreach_decay_weights_(params, lr, wd)
        interpolated = torch._foreach_lerp(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_add_(params, foreach_nan_preserving_sign(list(interpolated)), alpha=-lr)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta2)
