"""Adan: adaptive Nesterov momentum."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from steepest.optim._base import Capabilities, ParamGroup, SteepestOptimizer
from steepest.optim._functional import (
    addcdiv_scaled_,
    addcmul_scaled_,
    bias_correction,
    copy_all_,
    decay_weights_,
    foreach_decay_weights_,
    global_norm,
    increment_step,
    increment_steps,
    lerp_,
    scalar_sqrt,
)
from steepest.optim._validation import NON_NEGATIVE, UNIT_OPEN, Boolean, Tuple


class Adan(SteepestOptimizer):
    r"""Adan (Adaptive Nesterov momentum), as in the official code (sail-sg/Adan).

    Paper: Xie, Zhou, Li, Lin, Yan, "Adan: Adaptive Nesterov Momentum Algorithm for Faster
    Optimizing Deep Models", IEEE TPAMI 2024, arXiv:2208.06677.

    Update rule (paper, Algorithm 1), with gradient :math:`g_k`, the paper's momentum
    coefficients :math:`\beta_i^{\mathrm{paper}}` and weight decay :math:`\lambda`:

    .. math::

        m_k &= (1-\beta_1^{\mathrm{paper}}) m_{k-1} + \beta_1^{\mathrm{paper}} g_k \\
        v_k &= (1-\beta_2^{\mathrm{paper}}) v_{k-1} + \beta_2^{\mathrm{paper}} (g_k - g_{k-1}) \\
        n_k &= (1-\beta_3^{\mathrm{paper}}) n_{k-1}
               + \beta_3^{\mathrm{paper}} [g_k + (1-\beta_2^{\mathrm{paper}})(g_k - g_{k-1})]^2 \\
        \eta_k &= \eta / (\sqrt{n_k} + \varepsilon) \\
        \theta_{k+1} &= (1 + \lambda\eta)^{-1}
               [\theta_k - \eta_k \circ (m_k + (1-\beta_2^{\mathrm{paper}}) v_k)]

    ``betas`` follow the official code's convention, :math:`\beta_i = 1 - \beta_i^{\mathrm{paper}}`
    (so the default (0.98, 0.92, 0.99) is the paper's (0.02, 0.08, 0.01)). With that and the code's
    bias corrections :math:`b_i = 1 - \beta_i^k`, the step this class takes is

    .. math::

        \theta_{k+1} = (1 + \lambda\eta)^{-1}\Big[\theta_k - \frac{\eta\, m_k / b_1
            + \eta\,\beta_2\, v_k / b_2}{\sqrt{n_k / b_3} + \varepsilon}\Big].

    Differences from the paper, all as in the official code: the moments start at zero and are
    bias-corrected as in Adam (Algorithm 1 has no bias correction); at the first step
    :math:`g_0 = g_1`, so the gradient difference is 0; the restart option of Algorithm 1 (the
    official ``restart_opt``) is not provided. ``no_prox=True`` replaces
    the proximal decay by the decoupled :math:`\theta \leftarrow \theta(1-\eta\lambda) - \text{update}`.

    Differences from the official code: with ``max_grad_norm > 0`` the official code multiplies
    ``p.grad`` in place by the clip factor; here ``p.grad`` is left unchanged and the factor is
    applied to the copy the update uses. The global norm is accumulated in float32 there and in
    float32 or the gradients' wider dtype here, and the clip's :math:`\varepsilon` is the
    constructor's ``eps`` (the official code uses the last group's). The official code counts steps
    per param group; here each parameter has its own counter, which agrees unless a parameter
    misses steps (its gradient is ``None``). Both paths fold :math:`\sqrt{b_3}` into the step
    sizes and :math:`\varepsilon`, :math:`(\sqrt{n} + \varepsilon\sqrt{b_3})/\sqrt{b_3}`
    (the same value; the rounding differs by an ulp).

    State per parameter: ``exp_avg`` (:math:`m`), ``exp_avg_diff`` (:math:`v`), ``exp_avg_sq``
    (:math:`n`), ``prev_grad`` (:math:`g_{k-1}` after clipping), each like the parameter, and
    ``step`` (0-dim float32). Four tensors: twice AdamW's state.

    Args:
        params: parameters or param groups.
        lr: step size :math:`\eta`. Default 1e-3 (official code); its README suggests an lr 5-10x
            Adam's.
        betas: :math:`(\beta_1, \beta_2, \beta_3)` in the code's convention, default
            (0.98, 0.92, 0.99) (official code). The README suggests tuning :math:`\beta_3` first.
        eps: :math:`\varepsilon` added to :math:`\sqrt{n_k/b_3}`, default 1e-8 (official code).
        weight_decay: :math:`\lambda`, default 0 (official code; its README's training recipes
            use 0.02).
        max_grad_norm: clip all gradients of all groups together to this global l2 norm before
            the update, factor :math:`\min(1, c/(\|g\| + \varepsilon))`; 0 (default, official
            code) disables clipping. It is one value for the whole optimizer: a param group may
            not set a different one.
        no_prox: decoupled decay instead of the proximal step, default False (official code).
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure (one is called first if given).

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = steepest.Adan([w], lr=0.1)
        >>> w.grad = torch.tensor([0.5, -0.5])
        >>> _ = opt.step()  # bias-corrected first step: about lr * sign(g)
        >>> w.detach()
        tensor([ 0.9000, -1.9000])
    """

    capabilities = Capabilities(global_statistic=True, supports_fused=True)
    param_state = ("exp_avg", "exp_avg_diff", "exp_avg_sq", "prev_grad")
    scalar_state = ("step",)
    hyperparameter_rules = MappingProxyType(
        {"betas": Tuple(3, UNIT_OPEN), "max_grad_norm": NON_NEGATIVE, "no_prox": Boolean()}
    )
    #: The clip factor of the current step, set by ``_prepare_step`` (``None`` without clipping).
    _grad_scale: Tensor | None = None

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        max_grad_norm: float = 0.0,
        *,
        no_prox: bool = False,
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
            max_grad_norm=max_grad_norm,
            no_prox=no_prox,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group; ``max_grad_norm`` is global, so a group may not override it."""
        own = param_group.get("max_grad_norm", self.defaults["max_grad_norm"])
        if own != self.defaults["max_grad_norm"]:
            raise ValueError(
                f"Adan: invalid max_grad_norm={own!r} in a param group; the clip is over all groups "
                f"together, set it once in the constructor (here {self.defaults['max_grad_norm']!r})"
            )
        super().add_param_group(param_group)

    def _prepare_step(self, grads: list[Tensor]) -> None:
        """The clip factor ``min(1, max_grad_norm / (||g|| + eps))`` over every group's gradients."""
        self._grad_scale = None
        max_norm = self.defaults["max_grad_norm"]
        if max_norm > 0 and grads:
            total = global_norm(grads)
            self._grad_scale = torch.clamp(max_norm / (total + self.defaults["eps"]), max=1.0)

    def _scaled(self, grads: list[Tensor]) -> list[Tensor]:
        """The gradients times the clip factor (new tensors), or ``grads`` when not clipping."""
        scale = self._grad_scale
        if scale is None:
            return grads
        return list(torch._foreach_mul(grads, scale.to(grads[0].device)))

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2, beta3), eps = group["lr"], group["betas"], group["eps"]
        wd, no_prox = group["weight_decay"], group["no_prox"]
        for param, raw_grad, state in zip(params, grads, states, strict=True):
            grad = raw_grad if self._grad_scale is None else raw_grad * self._grad_scale.to(raw_grad.device)
            exp_avg, exp_avg_diff, exp_avg_sq = state["exp_avg"], state["exp_avg_diff"], state["exp_avg_sq"]
            prev_grad = state["prev_grad"]
            step = increment_step(state["step"])
            if isinstance(step, Tensor):
                prev_grad.copy_(torch.where(step == 1, grad, prev_grad))
            elif step == 1:
                prev_grad.copy_(grad)  # g_0 = g_1: no difference at the first step
            diff = grad - prev_grad
            lerp_(exp_avg, grad, 1.0 - beta1)
            lerp_(exp_avg_diff, diff, 1.0 - beta2)
            # n <- beta3 n + (1 - beta3) (g + beta2 d)^2; g + beta2 d = lerp(g_prev, g, 1 + beta2)
            corrected = lerp_(prev_grad, grad, 1.0 + beta2)
            addcmul_scaled_(exp_avg_sq.mul_(beta3), corrected, corrected, 1.0 - beta3)
            prev_grad.copy_(grad)
            # sqrt(n / b3) + eps = (sqrt(n) + eps sqrt(b3)) / sqrt(b3): fold sqrt(b3) into the steps
            sqrt_bc3 = scalar_sqrt(bias_correction(beta3, step))
            denom = exp_avg_sq.sqrt().add_(eps * sqrt_bc3)
            if no_prox:
                decay_weights_(param, lr, wd)
            addcdiv_scaled_(param, exp_avg, denom, -lr * sqrt_bc3 / bias_correction(beta1, step))
            addcdiv_scaled_(param, exp_avg_diff, denom, -lr * beta2 * sqrt_bc3 / bias_correction(beta2, step))
            if (isinstance(wd, Tensor) or wd != 0.0) and not no_prox:
                param.div_(1.0 + lr * wd)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2, beta3), eps = group["lr"], group["betas"], group["eps"]
        wd, no_prox = group["weight_decay"], group["no_prox"]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_diffs = [s["exp_avg_diff"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        prev_grads = [s["prev_grad"] for s in states]
        steps = increment_steps([s["step"] for s in states])
        grads = self._scaled(grads)
        first = [i for i, step in enumerate(steps) if step == 1]
        if first:
            copy_all_([prev_grads[i] for i in first], [grads[i] for i in first])

        # No temporaries: the g_{t-1} buffer holds g + beta2 d, then the denominator, then g_t.
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_lerp_(exp_avg_diffs, grads, 1.0 - beta2)  # v <- beta2 v + (1-beta2)(g - g_prev)
        torch._foreach_add_(exp_avg_diffs, prev_grads, alpha=beta2 - 1.0)
        torch._foreach_lerp_(prev_grads, grads, 1.0 + beta2)  # g + beta2 (g - g_prev)
        torch._foreach_mul_(exp_avg_sqs, beta3)
        torch._foreach_addcmul_(exp_avg_sqs, prev_grads, prev_grads, value=1.0 - beta3)

        sqrt_bc3 = [math.sqrt(bias_correction(beta3, s)) for s in steps]
        denoms = prev_grads
        copy_all_(denoms, exp_avg_sqs)
        torch._foreach_sqrt_(denoms)
        torch._foreach_add_(denoms, [eps * c for c in sqrt_bc3])
        if no_prox:
            foreach_decay_weights_(params, lr, wd)
        step_sizes = [-lr * c / bias_correction(beta1, s) for c, s in zip(sqrt_bc3, steps, strict=True)]
        diff_sizes = [-lr * beta2 * c / bias_correction(beta2, s) for c, s in zip(sqrt_bc3, steps, strict=True)]
        torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)
        torch._foreach_addcdiv_(params, exp_avg_diffs, denoms, diff_sizes)
        if wd != 0.0 and not no_prox:
            torch._foreach_div_(params, 1.0 + lr * wd)
        copy_all_(prev_grads, grads)
