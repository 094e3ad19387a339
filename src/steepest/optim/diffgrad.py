"""diffGrad: Adam with a friction coefficient from the change of the gradient."""

from __future__ import annotations

from typing import Any, overload

import torch
from torch import Tensor

from steepest.optim._base import Capabilities, ParamGroup, SteepestOptimizer
from steepest.optim._functional import (
    Scalar,
    add_scaled_,
    addcdiv_scaled_,
    bias_correction,
    copy_all_,
    foreach_update_moments_,
    increment_step,
    increment_steps,
    scalar_sqrt,
    update_moments_,
)


@overload
def _step_size(lr: float, beta1: float, beta2: float, step: float) -> float: ...
@overload
def _step_size(lr: Scalar, beta1: Scalar, beta2: Scalar, step: Scalar) -> Scalar: ...
def _step_size(lr: Scalar, beta1: Scalar, beta2: Scalar, step: Scalar) -> Scalar:
    """``lr * sqrt(1 - beta2**t) / (1 - beta1**t)``: both bias corrections in one scalar (eps form A)."""
    return lr * scalar_sqrt(bias_correction(beta2, step)) / bias_correction(beta1, step)


class DiffGrad(SteepestOptimizer):
    r"""diffGrad: Adam whose momentum is damped where the gradient barely changes.

    Paper: Dubey, Chakraborty, Roy, Mukherjee, Singh, Chaudhuri,
    "diffGrad: An Optimization Method for Convolutional Neural Networks",
    IEEE Transactions on Neural Networks and Learning Systems 2020, arXiv:1909.11015.

    Update rule (paper; :math:`g_0 = 0`), with gradient :math:`g_t`, step
    :math:`t \ge 1` and the logistic function :math:`\sigma`:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \xi_t &= \sigma(|g_{t-1} - g_t|) \in [\tfrac12, 1) \\
        \theta_t &= \theta_{t-1} - \alpha \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
            \frac{\xi_t\, m_t}{\sqrt{v_t} + \epsilon}

    Differences from the paper: as in the official code (shivram1987/diffGrad ``diffGrad_v2.py``,
    identical to ``torch_optimizer.DiffGrad`` 0.3.0), :math:`\epsilon` is added to
    :math:`\sqrt{v_t}` with both bias corrections folded into the step size (Adam 2014's
    form), and weight decay :math:`\lambda` is coupled L2, :math:`g_t \leftarrow g_t +
    \lambda\theta_{t-1}`, applied before everything else, so the stored previous gradient
    includes the L2 term. The official code adds the L2 term to ``p.grad`` in place; here it
    goes to a temporary and ``p.grad`` is left unchanged. The official ``diffGrad.py`` (v1)
    aliased the previous gradient to ``p.grad`` (so :math:`\xi_t \equiv 0.5` under gradient
    accumulation); here it is a copy, as in v2.

    State per parameter: ``step`` (scalar), ``exp_avg`` (:math:`m`), ``exp_avg_sq``
    (:math:`v`) and ``previous_grad`` (:math:`g_{t-1}`, zeros at the start), like the parameter.

    Args:
        params: parameters or param groups.
        lr: step size :math:`\alpha`. Default 1e-3 (official code).
        betas: :math:`(\beta_1, \beta_2)`, default (0.9, 0.999) (official code).
        eps: :math:`\epsilon`, default 1e-8 (official code).
        weight_decay: L2 coefficient :math:`\lambda` added to the gradient, default 0
            (official code).
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = steepest.DiffGrad([w], lr=0.1)
        >>> w.grad = torch.tensor([0.5, -0.5])
        >>> _ = opt.step()  # first step: lr * sigmoid(|g|) * sign(g)
        >>> w.detach()
        tensor([ 0.9378, -1.9378])
    """

    capabilities = Capabilities(supports_fused=True)
    param_state = ("exp_avg", "exp_avg_sq", "previous_grad")
    scalar_state = ("step",)

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
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
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for param, grad, state in zip(params, grads, states, strict=True):
            exp_avg, exp_avg_sq, previous_grad = state["exp_avg"], state["exp_avg_sq"], state["previous_grad"]
            step = increment_step(state["step"])
            if isinstance(wd, Tensor) or wd != 0.0:
                grad = add_scaled_(grad.clone(), param, wd)  # a new tensor: p.grad stays as it was
            update_moments_(exp_avg, exp_avg_sq, grad, beta1, beta2)
            friction = (previous_grad - grad).abs_().sigmoid_()
            previous_grad.copy_(grad)
            denom = exp_avg_sq.sqrt().add_(eps)
            addcdiv_scaled_(param, friction.mul_(exp_avg), denom, -_step_size(lr, beta1, beta2, step))

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        previous = [s["previous_grad"] for s in states]
        steps = increment_steps([s["step"] for s in states])
        if wd != 0.0:
            grads = list(torch._foreach_add(grads, params, alpha=wd))  # new tensors: p.grad stays as it was
        foreach_update_moments_(exp_avgs, exp_avg_sqs, grads, beta1, beta2)
        # previous_grad holds the friction xi * m until the end of the step, saving a temporary.
        torch._foreach_sub_(previous, grads)
        torch._foreach_abs_(previous)
        torch._foreach_sigmoid_(previous)
        torch._foreach_mul_(previous, exp_avgs)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, previous, denom, [-_step_size(lr, beta1, beta2, t) for t in steps])
        copy_all_(previous, grads)
