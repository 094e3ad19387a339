"""AdaGrad-Norm: gradient descent with one AdaGrad step size for the whole gradient norm."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from steepest.optim._base import (
    SCALAR_DTYPE,
    Capabilities,
    ParamGroup,
    StateSpec,
    SteepestOptimizer,
    device_dtype_buckets,
)
from steepest.optim._functional import (
    copy_all_,
    decay_weights_,
    foreach_decay_weights_,
    materialized,
    norm_dtype,
    per_tensor_norms,
)
from steepest.optim._validation import POSITIVE, OneOf


class AdaGradNorm(SteepestOptimizer):
    r"""AdaGrad-Norm: SGD with step size :math:`\eta / b_j`, :math:`b_j^2` summing squared gradient norms.

    Paper: Ward, Wu, Bottou, "AdaGrad stepsizes: Sharp convergence over nonconvex landscapes",
    ICML 2019 / JMLR 21(219) 2020, arXiv:1806.01811.

    Update rule (paper, Algorithm 1), with :math:`x` all the parameters of a param group that
    have a gradient, stochastic gradient :math:`G_j = G(x_j, \xi_j)`, :math:`b_0 > 0`, step
    size :math:`\eta` and decoupled weight decay :math:`\lambda` (ours):

    .. math::

        b_{j+1}^2 &= b_j^2 + \|G_j\|^2 \\
        x_{j+1} &= x_j (1 - \eta\lambda) - \frac{\eta}{b_{j+1}}\, G_j

    The norm is the l2 norm of the whole gradient of the group (``scope="global"``, as in the
    paper). ``scope="tensor"`` keeps one :math:`b` per parameter tensor instead
    (:math:`b_{j+1}^2 = b_j^2 + \|G_j^{(p)}\|^2` for each tensor :math:`p`), the common
    layer-wise variant.

    Differences from the paper: weight decay is ours (none in the paper); ``lr`` follows the
    schedule, so a scheduler multiplies :math:`\eta`. Choices where the paper is silent, for
    ``scope="global"``: each parameter keeps its own copy of :math:`b^2` (so its state is
    self-contained for ``state_dict`` and sharding), all equal while every parameter gets a
    gradient at every step. When some parameters have no gradient in a step they are skipped
    (untouched, state included) and the others update from
    :math:`b^2 = \max_p b_p^2 + \sum_p \|G^{(p)}\|^2` over the parameters that have one,
    written back to each of them; the maximum is the longest history, since :math:`b^2` only
    grows. :math:`b^2` is accumulated and stored in float32 or wider (float64 for float64
    parameters), and the sum is formed in float64, for any parameter dtype. The step size
    :math:`\eta/b` is a host double, so each step reads one value from the device per group
    (per (device, dtype) bucket with ``scope="tensor"``).

    State per parameter: ``sum_sq`` (:math:`b^2`, a scalar in float32, or float64 for float64
    parameters), created as :math:`b_0^2`. No step counter.

    Args:
        params: parameters or param groups. Each group has its own :math:`b`.
        lr: :math:`\eta`, default 1.0 (the default of the second author's PyTorch
            ``Adagradnorm``, xwuShirley/pytorch ``torch/optim/adagradnorm.py``; with
            :math:`\eta = 1` the first step has length at most 1 whatever the gradient scale).
        initial_accumulator: :math:`b_0 > 0`, default 0.1: the same author's default initial
            sum is :math:`b_0^2 = 10^{-2}`. The paper proves convergence from any
            :math:`b_0 > 0` and shows the method robust over many orders of magnitude of
            :math:`b_0`: a :math:`b_0` below the (unknown) smoothness scale is corrected
            within a few steps, while a large one only makes the early steps short, so a small
            value is the safe side.
        weight_decay: decoupled decay :math:`\lambda`, default 0.
        scope: ``"global"`` (default, the paper: one :math:`b` for the whole group) or
            ``"tensor"`` (one :math:`b` per parameter tensor).
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure.

    Example:
        >>> import torch, steepest
        >>> a = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> b = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = steepest.AdaGradNorm([a, b], lr=1.0, initial_accumulator=5.0)
        >>> a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
        >>> _ = opt.step()  # b^2 = 25 + 25, step 1/sqrt(50)
        >>> a.detach(), b.detach()
        (tensor([0.5757, 1.0000]), tensor([0.4343]))
        >>> opt.state[a]["sum_sq"], opt.state[b]["sum_sq"]
        (tensor(50.), tensor(50.))
    """

    capabilities = Capabilities(global_statistic=True, supports_fused=True)
    foreach_whole_group = True
    scalar_state = ("sum_sq",)
    hyperparameter_rules = MappingProxyType({"initial_accumulator": POSITIVE, "scope": OneOf(("global", "tensor"))})

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        initial_accumulator: float = 0.1,
        weight_decay: float = 0.0,
        *,
        scope: str = "global",
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            initial_accumulator=initial_accumulator,
            weight_decay=weight_decay,
            scope=scope,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``sum_sq``: a 0-dim :math:`b^2` in float32, or in float64 for float64 parameters."""
        return {"sum_sq": ((), torch.promote_types(param.dtype, SCALAR_DTYPE))}

    def _init_state(self, param: Tensor, group: ParamGroup, state: dict[str, Any]) -> None:
        """``sum_sq`` starts at :math:`b_0^2`."""
        (shape, dtype) = self.state_shapes(param, group)["sum_sq"]
        state["sum_sq"] = torch.full(shape, group["initial_accumulator"] ** 2, dtype=dtype, device=param.device)

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        if torch.compiler.is_compiling():
            self._compiled_update(group, params, grads, states)
            return
        if group["scope"] == "tensor":
            for param, grad, state in zip(params, grads, states, strict=True):
                sum_sq = state["sum_sq"]
                sum_sq.add_(torch.linalg.vector_norm(grad, dtype=sum_sq.dtype).square())
                decay_weights_(param, lr, wd)
                param.add_(grad, alpha=-lr / math.sqrt(float(sum_sq)))
            return
        # global: b^2 = max over the group's copies + sum of squared norms, in float64
        previous = [float(state["sum_sq"]) for state in states]
        squared_norms = [_norm(grad) ** 2 for grad in grads]
        b_squared = (math.nan if any(map(math.isnan, previous)) else max(previous)) + sum(squared_norms)
        for param, grad, state in zip(params, grads, states, strict=True):
            state["sum_sq"].fill_(b_squared)
            decay_weights_(param, lr, wd)
            param.add_(grad, alpha=-lr / math.sqrt(b_squared))

    @staticmethod
    def _compiled_update(
        group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        """The per-tensor update as tensor math, for the fused path: ``b^2`` never leaves the device.

        Same arithmetic as the eager loop above (``b^2`` accumulated in ``sum_sq``'s dtype per
        tensor, in float64 over the group), with the host floats replaced by 0-dim tensors. A
        float64 ``sum_sq`` arrives as a 1-element view (:func:`steepest.optim._fused.writable_scalars`),
        hence the ``reshape(())``.
        """
        lr, wd = group["lr"], group["weight_decay"]
        if group["scope"] == "tensor":
            for param, grad, state in zip(params, grads, states, strict=True):
                sum_sq = state["sum_sq"]
                wide = torch.promote_types(norm_dtype(grad), sum_sq.dtype)  # never narrower than the accumulator
                sum_sq.add_(torch.linalg.vector_norm(grad, dtype=wide).square().to(sum_sq.dtype))
                decay_weights_(param, lr, wd)
                param.add_(grad * materialized((-lr / sum_sq.sqrt()).reshape(())))
            return
        previous = torch.stack([state["sum_sq"].to(torch.float64).reshape(()) for state in states]).amax()
        squared = [
            torch.linalg.vector_norm(grad, dtype=norm_dtype(grad)).to(torch.float64) ** 2
            for grad in grads
        ]
        b_squared = previous + torch.stack(squared).sum()
        step = materialized(-lr / b_squared.sqrt())
        for param, grad, state in zip(params, grads, states, strict=True):
            state["sum_sq"].copy_(b_squared)
            decay_weights_(param, lr, wd)
            param.add_(grad * step)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        """Called with the whole group; splits it into (device, dtype) buckets itself."""
        lr, wd = group["lr"], group["weight_decay"]
        buckets = device_dtype_buckets(params, grads, states)
        if group["scope"] == "tensor":
            for bucket_params, bucket_grads, bucket_states in buckets:
                sums = [s["sum_sq"] for s in bucket_states]
                norms = torch._foreach_norm(bucket_grads, 2, dtype=sums[0].dtype)
                torch._foreach_mul_(norms, norms)
                torch._foreach_add_(sums, norms)
                foreach_decay_weights_(bucket_params, lr, wd)
                # Host step sizes (one read per bucket): a 0-dim divisor would be rounded to a
                # bfloat16 parameter's dtype inside addcdiv.
                steps = [-lr / math.sqrt(v) for v in torch.stack(sums).tolist()]
                torch._foreach_add_(bucket_params, torch._foreach_mul(bucket_grads, steps))
            return
        device = params[0].device
        # b^2 = max over the group's copies (per bucket, then over buckets) + sum of squared norms
        previous = torch.stack(
            [torch.stack([s["sum_sq"] for s in b_states]).amax().to(device, torch.float64) for *_, b_states in buckets]
        ).amax()
        b_squared = previous + per_tensor_norms(grads, 2.0).square().sum()
        for bucket_params, _, bucket_states in buckets:
            sums = [s["sum_sq"] for s in bucket_states]
            copy_all_(sums, [b_squared.to(sums[0].device)] * len(sums))
            foreach_decay_weights_(bucket_params, lr, wd)
        step = -lr / math.sqrt(b_squared.item())
        for bucket_params, bucket_grads, _ in buckets:
            torch._foreach_add_(bucket_params, bucket_grads, alpha=step)


def _norm(grad: Tensor) -> float:
    """``||grad||_2``, computed in float32-or-wider, as a Python float."""
    return float(torch.linalg.vector_norm(grad, dtype=torch.promote_types(grad.dtype, torch.float32)))
