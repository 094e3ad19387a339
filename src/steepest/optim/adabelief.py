"""AdaBelief: adapting step sizes by the belief in observed gradients."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from steepest.optim._base import Capabilities, ParamGroup, StateSpec, SteepestOptimizer
from steepest.optim._functional import (
    Scalar,
    add_scaled_,
    addcdiv_scaled_,
    addcmul_scaled_,
    bias_correction,
    copy_all_,
    increment_step,
    increment_steps,
    lerp_,
    materialized,
    scalar_sqrt,
)
from steepest.optim._validation import Boolean


def rectification(beta1: float, beta2: float, step: float, degenerated_to_sgd: bool) -> tuple[bool, float]:
    r"""RAdam's rectification at ``step``: ``(adaptive, k)``, the update being ``-lr * k * m / den``.

    ``adaptive`` is true when the variance of the adaptive step is tractable
    (:math:`\rho_t \ge 5`); then ``k`` already holds both bias corrections. Otherwise the
    step is an SGD-momentum step ``-lr * k * m`` with ``k = 1 / bc1``, or no step (``k = 0``)
    when ``degenerated_to_sgd`` is false. Plain Python floats: the value depends on the step only.
    """
    bc1 = bias_correction(beta1, step)
    beta2_t = beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho = rho_inf - 2.0 * step * beta2_t / (1.0 - beta2_t)
    if rho >= 5.0:
        numerator = (1.0 - beta2_t) * (rho - 4.0) * (rho - 2.0) * rho_inf
        return True, math.sqrt(numerator / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)) / bc1
    return False, (1.0 / bc1 if degenerated_to_sgd else 0.0)


def tensor_rectification(beta1: Tensor, beta2: Tensor, step: Tensor, degenerated_to_sgd: bool) -> tuple[Tensor, Tensor]:
    r""":func:`rectification` as tensor math for the compiled fused path: ``(adaptive_k, sgd_k)``.

    Exactly one is non-zero: ``adaptive_k`` (the ``k`` of an adaptive step) when
    :math:`\rho_t \ge 5`, else ``sgd_k`` (``1 / bc1`` or 0), so no host-side branch is needed.
    """
    bc1 = bias_correction(beta1, step)
    beta2_t = beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho = rho_inf - 2.0 * step * beta2_t / (1.0 - beta2_t)
    adaptive = rho >= 5.0
    ratio = (1.0 - beta2_t) * (rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)
    zero = torch.zeros_like(bc1)
    adaptive_k = torch.where(adaptive, ratio.clamp(min=0.0) ** 0.5 / bc1, zero)
    sgd_k = torch.where(adaptive, zero, 1.0 / bc1 if degenerated_to_sgd else zero)
    return materialized(adaptive_k), materialized(sgd_k)


class AdaBelief(SteepestOptimizer):
    r"""AdaBelief: Adam whose second moment tracks the belief :math:`(g_t - m_t)^2`.

    Paper: Zhuang, Tang, Ding, Tatikonda, Dvornek, Papademetris, Duncan,
    "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients",
    NeurIPS 2020, arXiv:2010.07468.

    Update rule (paper, Algorithm 2), with gradient :math:`g_t` and step :math:`t \ge 1`:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        s_t &= \beta_2 s_{t-1} + (1-\beta_2) (g_t - m_t)^2 + \epsilon \\
        \hat m_t &= m_t / (1-\beta_1^t), \qquad \hat s_t = s_t / (1-\beta_2^t) \\
        \theta_t &= \theta_{t-1} - \alpha\, \hat m_t / (\sqrt{\hat s_t} + \epsilon)

    With ``rectify=True`` (the default, as in the official code) the step is rectified as in
    RAdam: with :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`, when :math:`\rho_t \ge 5`

    .. math::

        r_t = \sqrt{\frac{(1-\beta_2^t)(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}},
        \qquad \theta_t = \theta_{t-1} - \frac{\alpha\, r_t}{1-\beta_1^t} \frac{m_t}{\sqrt{s_t} + \epsilon}

    and otherwise (the first 5 steps with :math:`\beta_2 = 0.999`) an SGD-momentum step
    :math:`\theta_t = \theta_{t-1} - \alpha \hat m_t` (or no step, ``degenerated_to_sgd=False``).

    Weight decay :math:`\lambda`: decoupled, :math:`\theta \leftarrow \theta(1 - \alpha\lambda)`
    before the update (``weight_decouple=True``), or :math:`\theta(1 - \lambda)`
    (``fixed_decay=True``), or an L2 term :math:`g_t \leftarrow g_t + \lambda\theta`
    (``weight_decouple=False``).

    Differences from the paper, all following the official code (juntang-zhuang/Adabelief-Optimizer,
    PyPI ``adabelief-pytorch`` 0.2.1), which the author calls authoritative:

    * the :math:`+\epsilon` of :math:`s_t` is added to the stored state in place, so it
      accumulates in :math:`s` over the steps (summaries that write :math:`s_t` as a plain
      EMA of :math:`(g_t - m_t)^2` omit it; see issues #18 and #57 of the official repository);
    * the rectification (``rectify=True``) and decoupled decay (``weight_decouple=True``)
      are on by default; neither is in Algorithm 2;
    * with ``amsgrad=True``, :math:`s^{max}_t = \max(s^{max}_{t-1}, s_t)` replaces
      :math:`s_t` in the unrectified step only: like the official code, the rectified step
      uses :math:`s_t`, so with ``rectify=True`` amsgrad does not change the trajectory;
    * the official code upcasts float16 parameters (and keeps their state) in float32; here
      state and step are in the parameter's dtype (bfloat16 and float16 alike). In float16,
      :math:`\epsilon = 10^{-16}` underflows to 0, so a coordinate whose gradient stays 0
      gets :math:`0/0`: for float16 use float32 master weights (as ``torch.amp`` does) or
      :math:`\epsilon \ge 10^{-7}`.

    Unlike the official code, the L2 term (``weight_decouple=False``) is added to a
    temporary: ``p.grad`` is not modified. The hyperparameters ``weight_decouple``,
    ``fixed_decay``, ``rectify`` and ``degenerated_to_sgd`` may differ per param group (the
    official code has one value per optimizer).

    State per parameter: ``step`` (scalar), ``exp_avg`` (:math:`m`) and ``exp_avg_var``
    (:math:`s`), like the parameter; with ``amsgrad=True`` also ``max_exp_avg_var``.

    Args:
        params: parameters or param groups.
        lr: step size :math:`\alpha`. Default 1e-3 (paper, official code).
        betas: :math:`(\beta_1, \beta_2)`, default (0.9, 0.999) (paper, official code).
        eps: :math:`\epsilon`, default 1e-16 (official code since 0.1.0; the README recommends
            1e-8 where SGD beats Adam, e.g. CNNs on ImageNet).
        weight_decay: :math:`\lambda`, default 0 (official code).
        amsgrad: use the running maximum of :math:`s_t` (unrectified step). Default False.
        weight_decouple: decoupled decay instead of L2. Default True (official code).
        fixed_decay: with decoupled decay, multiply by :math:`1-\lambda` instead of
            :math:`1-\alpha\lambda` (so parameters decay even at ``lr=0``). Default False.
        rectify: RAdam rectification. Default True (official code).
        degenerated_to_sgd: while :math:`\rho_t < 5`, take an SGD-momentum step instead of
            none. Default True (official code).
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = steepest.AdaBelief([w], lr=0.1)  # rectified: the first steps are SGD-momentum steps
        >>> w.grad = torch.tensor([0.5, -0.5])
        >>> _ = opt.step()
        >>> w.detach()
        tensor([ 0.9500, -1.9500])
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = steepest.AdaBelief([w], lr=0.1, rectify=False)  # first step: lr * g / (0.9 |g|)
        >>> w.grad = torch.tensor([0.5, -0.5])
        >>> _ = opt.step()
        >>> w.detach()
        tensor([ 0.8889, -1.8889])
    """

    capabilities = Capabilities(supports_fused=True)
    param_state = ("exp_avg", "exp_avg_var")
    scalar_state = ("step",)
    hyperparameter_rules = MappingProxyType(
        {name: Boolean() for name in ("amsgrad", "weight_decouple", "fixed_decay", "rectify", "degenerated_to_sgd")}
    )

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-16,
        weight_decay: float = 0.0,
        *,
        amsgrad: bool = False,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        rectify: bool = True,
        degenerated_to_sgd: bool = True,
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
            amsgrad=amsgrad,
            weight_decouple=weight_decouple,
            fixed_decay=fixed_decay,
            rectify=rectify,
            degenerated_to_sgd=degenerated_to_sgd,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``step``, ``exp_avg``, ``exp_avg_var``, and ``max_exp_avg_var`` with amsgrad."""
        shapes = super().state_shapes(param, group)
        if group["amsgrad"]:
            shapes["max_exp_avg_var"] = (tuple(param.shape), param.dtype)
        return shapes

    @classmethod
    def describe_state(cls) -> str:
        """One line stating the state kept per parameter."""
        return "step (scalar), exp_avg and exp_avg_var (like the parameter); max_exp_avg_var with amsgrad"

    @staticmethod
    def _decay_factor(group: ParamGroup) -> Scalar | None:
        """The decoupled decay multiplier, or None when there is none."""
        wd = group["weight_decay"]
        if not group["weight_decouple"] or (not isinstance(wd, Tensor) and wd == 0.0):
            return None
        return 1.0 - wd if group["fixed_decay"] else 1.0 - group["lr"] * wd

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        decay = self._decay_factor(group)
        l2 = not group["weight_decouple"] and (isinstance(wd, Tensor) or wd != 0.0)
        for param, grad, state in zip(params, grads, states, strict=True):
            exp_avg, exp_avg_var = state["exp_avg"], state["exp_avg_var"]
            step = increment_step(state["step"])
            if decay is not None:
                param.mul_(decay)
            if l2:
                grad = add_scaled_(grad.clone(), param, wd)  # a new tensor: p.grad stays as it was
            lerp_(exp_avg, grad, 1.0 - beta1)
            residual = grad - exp_avg
            addcmul_scaled_(exp_avg_var.mul_(beta2), residual, residual, 1.0 - beta2).add_(eps)
            if not group["rectify"]:
                second = exp_avg_var
                if group["amsgrad"]:
                    second = torch.maximum(state["max_exp_avg_var"], exp_avg_var, out=state["max_exp_avg_var"])
                denom = (second.sqrt() / scalar_sqrt(bias_correction(beta2, step))).add_(eps)
                addcdiv_scaled_(param, exp_avg, denom, -lr / bias_correction(beta1, step))
                continue
            if group["amsgrad"]:  # kept up to date, but the rectified step uses s (official code)
                torch.maximum(state["max_exp_avg_var"], exp_avg_var, out=state["max_exp_avg_var"])
            if isinstance(step, Tensor):
                adaptive_k, sgd_k = tensor_rectification(beta1, beta2, step, group["degenerated_to_sgd"])
                direction = torch.where(adaptive_k > 0, exp_avg / exp_avg_var.sqrt().add_(eps), exp_avg)
                add_scaled_(param, direction, -lr * (adaptive_k + sgd_k))
                continue
            adaptive, k = rectification(beta1, beta2, step, group["degenerated_to_sgd"])
            if adaptive:
                param.addcdiv_(exp_avg, exp_avg_var.sqrt().add_(eps), value=-lr * k)
            elif k != 0.0:
                param.add_(exp_avg, alpha=-lr * k)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_vars = [s["exp_avg_var"] for s in states]
        steps = increment_steps([s["step"] for s in states])
        decay = self._decay_factor(group)
        if decay is not None:
            torch._foreach_mul_(params, decay)
        # One temporary list: g + wd*p (L2 mode), then the residual g - m in the same buffer.
        if not group["weight_decouple"] and wd != 0.0:
            buffer = torch._foreach_add(grads, params, alpha=wd)
            torch._foreach_lerp_(exp_avgs, buffer, 1.0 - beta1)
            torch._foreach_sub_(buffer, exp_avgs)
        else:
            torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
            buffer = torch._foreach_sub(grads, exp_avgs)
        torch._foreach_mul_(exp_avg_vars, beta2)
        torch._foreach_addcmul_(exp_avg_vars, buffer, buffer, value=1.0 - beta2)
        torch._foreach_add_(exp_avg_vars, eps)
        second = exp_avg_vars
        if group["amsgrad"]:  # with rectify, kept up to date but unused (official code)
            second = [s["max_exp_avg_var"] for s in states]
            torch._foreach_maximum_(second, exp_avg_vars)
        if not group["rectify"]:
            # sqrt(s)/sqrt(bc2) + eps, folded: p -= (lr sqrt(bc2)/bc1) m / (sqrt(s) + eps sqrt(bc2)).
            root_bc2 = [math.sqrt(bias_correction(beta2, t)) for t in steps]
            copy_all_(buffer, second)
            torch._foreach_sqrt_(buffer)
            torch._foreach_add_(buffer, [eps * r for r in root_bc2])
            scales = [-lr * r / bias_correction(beta1, t) for r, t in zip(root_bc2, steps, strict=True)]
            torch._foreach_addcdiv_(params, exp_avgs, buffer, scales)
            return
        cache: dict[float, tuple[bool, float]] = {}
        for t in steps:
            if t not in cache:
                cache[t] = rectification(beta1, beta2, t, group["degenerated_to_sgd"])
        rect = [cache[t] for t in steps]
        adaptive = [i for i, (a, _) in enumerate(rect) if a]
        if adaptive:  # usually every parameter: all steps past the warm-up
            chosen = adaptive if len(adaptive) < len(params) else range(len(params))
            denom = [buffer[i] for i in chosen]
            copy_all_(denom, [exp_avg_vars[i] for i in chosen])
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(
                [params[i] for i in chosen], [exp_avgs[i] for i in chosen], denom, [-lr * rect[i][1] for i in chosen]
            )
        # SGD-momentum steps during the warm-up, one foreach call per distinct step size (usually one).
        for k in {k for a, k in rect if not a and k != 0.0}:
            sgd = [i for i, (a, kk) in enumerate(rect) if not a and kk == k]
            torch._foreach_add_([params[i] for i in sgd], [exp_avgs[i] for i in sgd], alpha=-lr * k)
