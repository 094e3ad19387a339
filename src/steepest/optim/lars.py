"""LARS: layer-wise adaptive rate scaling for large-batch SGD."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from steepest.optim._base import Capabilities, ParamGroup, StateSpec, SteepestOptimizer
from steepest.optim._functional import add_scaled_, materialized, norm_dtype, trust_ratio
from steepest.optim._validation import POSITIVE, Boolean


class LARS(SteepestOptimizer):
    r"""LARS (Layer-wise Adaptive Rate Scaling): SGD with momentum and a per-tensor local lr.

    Paper: You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks", 2017,
    arXiv:1708.03888.

    Update rule (paper, Algorithm 1), per parameter tensor ("layer") :math:`w` with gradient
    :math:`\nabla L(w_t)`, global lr :math:`\gamma_t`, trust coefficient :math:`\eta`, weight decay
    :math:`\beta` and momentum :math:`m`:

    .. math::

        \lambda &= \eta \frac{\|w_t\|}{\|\nabla L(w_t)\| + \beta \|w_t\|} \\
        v_{t+1} &= m v_t + \gamma_t \lambda (\nabla L(w_t) + \beta w_t) \\
        w_{t+1} &= w_t - v_{t+1}

    with :math:`\lambda = 1` when :math:`\|w_t\|` or the denominator is 0.

    This class follows kozistr's ``pytorch_optimizer.LARS``: the paper's local lr (MoCo-v3 and
    MAE's ``lars.py`` use :math:`\eta\|w\|/\|\nabla L + \beta w\|` instead), torch-SGD style
    momentum, :math:`b \leftarrow m b + (1-\text{dampening})\, d` with
    :math:`d = \lambda(\nabla L + \beta w)` and the buffer starting at zero, then
    :math:`w \leftarrow w - \gamma_t b` (or :math:`w - \gamma_t (d + m b)` with ``nesterov``).

    Differences from the paper: the lr multiplies the buffer rather than entering it, which is the
    same trajectory while :math:`\gamma_t` is constant (:math:`v = \gamma b`) and differs under a
    schedule; ``dampening`` and ``nesterov`` are extras. With ``exclude_1d=True`` (default, as
    kozistr, MoCo-v3 and MAE) tensors with at most one dimension (biases, norm scales) take plain
    momentum-SGD steps on :math:`\nabla L` alone, with neither the trust ratio nor weight decay;
    the paper adapts every layer, which ``exclude_1d=False`` gives. Unlike kozistr's code,
    ``p.grad`` is never modified, and the default lr is 1.0 (kozistr's is 1e-3).

    State per parameter: ``momentum_buffer`` (:math:`b`, like the parameter) when
    ``momentum > 0``; nothing otherwise. No step counter.

    Args:
        params: parameters or param groups.
        lr: global lr :math:`\gamma`, default 1.0 (timm, apex LARC): the trust coefficient already
            scales the step of every adapted tensor to about :math:`\gamma\eta\|w\|`. Excluded
            1-D tensors take plain SGD steps of size :math:`\gamma`, so scale ``lr`` with that
            in mind.
        momentum: :math:`m`, default 0.9 (kozistr, MoCo-v3).
        dampening: scales the new term of the buffer by :math:`1-\text{dampening}`, default 0
            (torch SGD, kozistr).
        weight_decay: :math:`\beta`, default 0 (kozistr, timm).
        trust_coefficient: :math:`\eta`, default 1e-3 (paper, kozistr, timm).
        nesterov: Nesterov momentum, :math:`w \leftarrow w - \gamma(d + m b)`, default False.
        exclude_1d: skip the trust ratio and weight decay for tensors with ``ndim <= 1``,
            default True (kozistr, MoCo-v3); False adapts every tensor as the paper.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure. Each parameter tensor is one "layer": the local lr
    uses per-tensor norms.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
        >>> opt = steepest.LARS([w], lr=1.0)
        >>> w.grad = torch.tensor([[0.6, 0.8]])
        >>> _ = opt.step()  # local lr 1e-3 * 5 / 1: the step is 0.005 * g
        >>> w.detach()
        tensor([[2.9970, 3.9960]])
    """

    capabilities = Capabilities(supports_fused=True)
    hyperparameter_rules = MappingProxyType(
        {"trust_coefficient": POSITIVE, "nesterov": Boolean(), "exclude_1d": Boolean()}
    )

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        *,
        nesterov: bool = False,
        exclude_1d: bool = True,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            nesterov=nesterov,
            exclude_1d=exclude_1d,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``momentum_buffer`` (like the parameter) when ``momentum > 0``, nothing otherwise."""
        if group["momentum"] == 0:
            return {}
        return {"momentum_buffer": (tuple(param.shape), param.dtype)}

    @classmethod
    def describe_state(cls) -> str:
        """One line stating the state kept per parameter."""
        return "momentum_buffer (like the parameter) when momentum > 0"

    @staticmethod
    def _adapted(param: Tensor, group: ParamGroup) -> bool:
        return param.ndim > 1 or not group["exclude_1d"]

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        wd, trust_coefficient = group["weight_decay"], group["trust_coefficient"]
        for param, grad, state in zip(params, grads, states, strict=True):
            update = grad
            if self._adapted(param, group):
                acc_dtype = norm_dtype(param)
                weight_norm = torch.linalg.vector_norm(param, dtype=acc_dtype)
                grad_norm = torch.linalg.vector_norm(grad, dtype=acc_dtype)
                local_lr = materialized(trust_ratio(weight_norm, grad_norm + wd * weight_norm, trust_coefficient))
                update = add_scaled_(grad.clone(), param, wd).mul_(local_lr)
            # Compiled, momentum is a tensor; its buffer exists exactly when it was > 0 at the first step.
            if "momentum_buffer" in state if isinstance(momentum, Tensor) else momentum > 0:
                buf = state["momentum_buffer"]
                add_scaled_(buf.mul_(momentum), update, 1.0 - dampening)
                update = add_scaled_(update.clone(), buf, momentum) if group["nesterov"] else buf
            add_scaled_(param, update, -lr)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        wd, trust_coefficient, nesterov = group["weight_decay"], group["trust_coefficient"], group["nesterov"]
        adapted = [self._adapted(p, group) for p in params]
        a_params = [p for p, a in zip(params, adapted, strict=True) if a]
        a_grads = [g for g, a in zip(grads, adapted, strict=True) if a]
        p_params = [p for p, a in zip(params, adapted, strict=True) if not a]
        p_grads = [g for g, a in zip(grads, adapted, strict=True) if not a]

        local_lrs: Tensor | None = None
        if a_params:
            norm_dtype = torch.promote_types(params[0].dtype, torch.float32)
            weight_norms = torch.stack(torch._foreach_norm(a_params, 2, dtype=norm_dtype))
            grad_norms = torch.stack(torch._foreach_norm(a_grads, 2, dtype=norm_dtype))
            local_lrs = trust_ratio(weight_norms, grad_norms + wd * weight_norms, trust_coefficient)

        def per_tensor(scale: Tensor) -> list[Tensor]:
            return list(scale.unbind())

        if momentum > 0:
            bufs = [s["momentum_buffer"] for s in states]
            a_bufs = [b for b, a in zip(bufs, adapted, strict=True) if a]
            p_bufs = [b for b, a in zip(bufs, adapted, strict=True) if not a]
            # b <- m b + (1 - dampening) * local_lr * (g + wd * w), without forming d
            torch._foreach_mul_(bufs, momentum)
            if local_lrs is not None:
                new_weight = local_lrs * (1.0 - dampening)
                torch._foreach_addcmul_(a_bufs, a_grads, per_tensor(new_weight))
                if wd != 0.0:
                    torch._foreach_addcmul_(a_bufs, a_params, per_tensor(new_weight * wd))
            if p_bufs:
                torch._foreach_add_(p_bufs, p_grads, alpha=1.0 - dampening)
            if not nesterov:
                torch._foreach_add_(params, bufs, alpha=-lr)
                return
        # w <- w - lr * d (then - lr * m * b with nesterov), d = local_lr * (g + wd * w)
        if local_lrs is not None:
            if wd != 0.0:
                torch._foreach_mul_(a_params, per_tensor(1.0 - (lr * wd) * local_lrs))
            torch._foreach_addcmul_(a_params, a_grads, per_tensor(-lr * local_lrs))
        if p_params:
            torch._foreach_add_(p_params, p_grads, alpha=-lr)
        if momentum > 0:
            torch._foreach_add_(params, bufs, alpha=-lr * momentum)
