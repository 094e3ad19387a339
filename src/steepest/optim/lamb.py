"""LAMB: layer-wise adaptive moments for large-batch training."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, overload

import torch
from torch import Tensor

from steepest.optim._base import Capabilities, ParamGroup, SteepestOptimizer
from steepest.optim._functional import (
    Scalar,
    add_scaled_,
    bias_correction,
    foreach_update_moments_,
    increment_step,
    increment_steps,
    materialized,
    norm_dtype,
    scalar_sqrt,
    trust_ratio,
    update_moments_,
)
from steepest.optim._validation import POSITIVE, Boolean, Optional


class LAMB(SteepestOptimizer):
    r"""LAMB (Layer-wise Adaptive Moments optimizer for Batch training), the paper's Algorithm 2.

    Paper: You, Li, Reddi, Hseu, Kumar, Bhojanapalli, Song, Demmel, Keutzer, Hsieh,
    "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes", ICLR 2020,
    arXiv:1904.00962 (v5).

    Update rule (paper, Algorithm 2), per parameter tensor ("layer") :math:`x` with gradient
    :math:`g_t`, weight decay :math:`\lambda` and scaling function :math:`\phi`:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \hat m_t &= m_t / (1-\beta_1^t), \quad \hat v_t = v_t / (1-\beta_2^t) \\
        r_t &= \hat m_t / (\sqrt{\hat v_t} + \epsilon) \\
        x_{t+1} &= x_t - \eta_t \frac{\phi(\|x_t\|)}{\|r_t + \lambda x_t\|} (r_t + \lambda x_t)

    with :math:`\phi(z) = \min(z, \text{clamp\_value})`, and a trust ratio of 1 when
    :math:`\phi(\|x_t\|)` or :math:`\|r_t + \lambda x_t\|` is 0. The step of each tensor thus has
    length :math:`\eta_t \phi(\|x_t\|)` (or :math:`\eta_t \|r_t + \lambda x_t\|` when the trust
    ratio is 1).

    Which LAMB this is: the paper's Algorithm 2 (bias correction on, weight decay inside the
    trust-ratio direction, the ratio applied to every tensor). The common codes differ:

    * cybertronai/pytorch-lamb and ``torch_optimizer.Lamb`` have no bias correction ("paper v3")
      and clamp :math:`\|x\|` at 10. ``bias_correction=False`` reproduces them exactly (their
      ``debias=True`` instead scales the step by :math:`\sqrt{1-\beta_2^t}/(1-\beta_1^t)` outside
      the trust ratio, which is not the paper's algorithm).
    * NVIDIA apex FusedLAMB bias-corrects, uses :math:`\phi(z) = z` (``clamp_value=None``), but
      applies the trust ratio only when :math:`\lambda \ne 0`, clips the global gradient norm to
      1 first, and defaults to :math:`\lambda = 0.01`; timm's ``Lamb`` is a port of it.

    Differences from the paper: :math:`\phi` defaults to a clamp at 10 (as cybertronai and
    torch-optimizer) rather than the identity; pass ``clamp_value=None`` for the identity. The
    trust ratio uses the unclamped update norm and falls back to 1 as in all three codes.

    State per parameter: ``exp_avg`` (:math:`m`), ``exp_avg_sq`` (:math:`v`), like the parameter,
    and ``step`` (0-dim float32).

    Args:
        params: parameters or param groups.
        lr: step size :math:`\eta`, default 1e-3 (cybertronai, apex).
        betas: :math:`(\beta_1, \beta_2)`, default (0.9, 0.999) (cybertronai, apex).
        eps: :math:`\epsilon`, default 1e-6 (cybertronai, apex).
        weight_decay: :math:`\lambda`, default 0 (cybertronai, torch-optimizer).
        clamp_value: upper bound of :math:`\phi`, default 10 (cybertronai, torch-optimizer);
            ``None``: :math:`\phi` is the identity (paper, apex).
        bias_correction: divide the moments by :math:`1-\beta^t`, default True (paper v5, apex);
            False is cybertronai's "paper v3" form.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure. Each parameter tensor is one "layer": the trust
    ratio uses per-tensor norms.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        >>> opt = steepest.LAMB([w], lr=0.1)
        >>> w.grad = torch.tensor([1.0, 1.0])
        >>> _ = opt.step()  # a step of length lr * ||w|| = 0.5 along -r
        >>> w.detach()
        tensor([2.6464, 3.6464])
    """

    capabilities = Capabilities(supports_fused=True)
    param_state = ("exp_avg", "exp_avg_sq")
    scalar_state = ("step",)
    hyperparameter_rules = MappingProxyType({"clamp_value": Optional(POSITIVE), "bias_correction": Boolean()})

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        clamp_value: float | None = 10.0,
        *,
        bias_correction: bool = True,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            clamp_value=clamp_value,
            bias_correction=bias_correction,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )

    @overload
    @staticmethod
    def _corrections(group: ParamGroup, step: float) -> tuple[float, float]: ...
    @overload
    @staticmethod
    def _corrections(group: ParamGroup, step: Scalar) -> tuple[Scalar, Scalar]: ...
    @staticmethod
    def _corrections(group: ParamGroup, step: Scalar) -> tuple[Scalar, Scalar]:
        r"""``(c, eps')`` with :math:`r = c\, m / (\sqrt{v} + \epsilon')`, the corrections folded in.

        :math:`\hat m/(\sqrt{\hat v} + \epsilon) = (\sqrt{b_2}/b_1)\, m / (\sqrt{v} + \epsilon\sqrt{b_2})`.
        """
        if not group["bias_correction"]:
            return 1.0, group["eps"]
        beta1, beta2 = group["betas"]
        sqrt_bc2 = scalar_sqrt(bias_correction(beta2, step))
        return sqrt_bc2 / bias_correction(beta1, step), group["eps"] * sqrt_bc2

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), wd, clamp = group["lr"], group["betas"], group["weight_decay"], group["clamp_value"]
        for param, grad, state in zip(params, grads, states, strict=True):
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            step = increment_step(state["step"])
            update_moments_(exp_avg, exp_avg_sq, grad, beta1, beta2)
            scale, eps = self._corrections(group, step)
            ratio = exp_avg / exp_avg_sq.sqrt().add_(eps)  # r = scale * ratio
            if isinstance(wd, Tensor) or wd != 0.0:
                update = add_scaled_(ratio.mul_(scale), param, wd)  # u = r + wd * x
                scale = 1.0
            else:
                update = ratio  # u = scale * ratio
            acc_dtype = norm_dtype(param)
            weight_norm = torch.linalg.vector_norm(param, dtype=acc_dtype)
            if clamp is not None:
                weight_norm = weight_norm.clamp(max=clamp)
            update_norm = torch.linalg.vector_norm(update, dtype=acc_dtype) * scale
            trust = trust_ratio(weight_norm, update_norm)
            add_scaled_(param, update * materialized(trust * scale), -lr)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), wd, clamp = group["lr"], group["betas"], group["weight_decay"], group["clamp_value"]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        steps = increment_steps([s["step"] for s in states])
        foreach_update_moments_(exp_avgs, exp_avg_sqs, grads, beta1, beta2)
        scales, eps = zip(*(self._corrections(group, s) for s in steps), strict=True)

        # One temporary list: sqrt(v) + eps', then q = m / (sqrt(v) + eps') (r = scale * q), then u / scale.
        updates = torch._foreach_sqrt(exp_avg_sqs)
        uniform = all(s == steps[0] for s in steps)
        torch._foreach_add_(updates, eps[0] if uniform else list(eps))
        torch._foreach_reciprocal_(updates)
        torch._foreach_mul_(updates, exp_avgs)
        if wd != 0.0:
            if uniform:
                torch._foreach_add_(updates, params, alpha=wd / scales[0])  # u = scale * (q + wd / scale * x)
            else:
                torch._foreach_mul_(updates, list(scales))
                torch._foreach_add_(updates, params, alpha=wd)  # u = r + wd * x
                scales = (1.0,) * len(params)

        norm_dtype = torch.promote_types(params[0].dtype, torch.float32)
        weight_norms, update_norms = torch.stack(torch._foreach_norm([*params, *updates], 2, dtype=norm_dtype)).chunk(2)
        if clamp is not None:
            weight_norms = weight_norms.clamp(max=clamp)
        # one host-to-device copy only when the folded bias corrections differ between tensors
        scale: float | Tensor = scales[0]
        if not uniform and any(s != scales[0] for s in scales):
            scale = torch.tensor(scales, dtype=norm_dtype, device=weight_norms.device)
        update_norms = update_norms * scale
        factors = (trust_ratio(weight_norms, update_norms) * scale).mul_(-lr)
        torch._foreach_addcmul_(params, updates, factors.unbind())
