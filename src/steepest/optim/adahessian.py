"""AdaHessian: Adam with a Hutchinson Hessian diagonal in place of the squared gradient."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from steepest.optim._base import Capabilities, ParamGroup
from steepest.optim._curvature_base import HutchinsonOptimizer
from steepest.optim._functional import (
    add_scaled_,
    addcmul_scaled_,
    bias_correction,
    increment_step,
    increment_steps,
    materialized,
)
from steepest.optim._validation import Boolean, Integer, Interval, Rule


def spatial_average(hessian_abs: Tensor, average_kernels: bool = True) -> Tensor:
    """AdaHessian's spatial averaging of ``|Hz|`` for convolution kernels.

    Tensors of 0-2 dimensions are kept elementwise. A kernel ``[out, in, *spatial]`` with 1, 2 or
    3 spatial dimensions (Conv1d/2d/3d) is averaged over its spatial dimensions and broadcast
    back, so every tap of one (out, in) filter shares one curvature value.

    Example:
        >>> spatial_average(torch.tensor([[[1.0, 3.0]]])).tolist()
        [[[2.0, 2.0]]]
    """
    if hessian_abs.dim() <= 2 or not average_kernels:
        return hessian_abs
    dims = tuple(range(2, hessian_abs.dim()))
    return hessian_abs.mean(dim=dims, keepdim=True).expand_as(hessian_abs)


class AdaHessian(HutchinsonOptimizer):
    r"""AdaHessian: an adaptive second-order optimizer with a Hutchinson Hessian diagonal.

    Paper: Yao, Gholami, Shen, Mustafa, Keutzer, Mahoney, "ADAHESSIAN: An Adaptive Second Order
    Optimizer for Machine Learning", AAAI 2021, arXiv:2006.00719. Official code:
    amirgholami/adahessian (``image_classification/optim_adahessian.py``).

    Update rule, with a fresh Rademacher probe :math:`z` every step and :math:`t` the step count:

    .. math::

        D_t &= \mathrm{avg}_{spatial}\,|H_t z| \quad (= |z \odot H_t z|;\ \text{elementwise for 0-2-D tensors}) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) D_t^2 \\
        \theta_t &= \theta_{t-1} - \eta \Big( \frac{m_t / (1-\beta_1^t)}
            {(\sqrt{v_t})^{k} / (\sqrt{1-\beta_2^t})^{k} + \epsilon} + \lambda \theta_{t-1} \Big)

    with :math:`k` the ``hessian_power``. Spatial averaging: a tensor with 3, 4 or 5 dimensions
    is a Conv1d/2d/3d kernel ``[out, in, *spatial]`` and :math:`D` is averaged over the spatial
    dimensions (the paper's block size; the official code averages only 4-D kernels).

    Differences from the official code: it handles no 3-D or 5-D kernel (a 3-D tensor reuses the
    previous tensor's curvature or raises, jettify/pytorch-optimizer#500); here every kernel rank
    is averaged, and ``average_conv_kernel=False`` keeps any tensor elementwise. Probes come from
    seeded generators (reproducible, resumable) instead of the global RNG. ``maximize`` is added.

    State per parameter: ``step`` (scalar), ``exp_avg`` (:math:`m`), ``exp_hessian_diag_sq``
    (:math:`v`), both like the parameter.

    Args:
        params: parameters or param groups.
        lr: :math:`\eta`, default 0.15 (official code).
        betas: :math:`(\beta_1, \beta_2)`, default (0.9, 0.999) (paper, official code).
        eps: :math:`\epsilon`, default 1e-4 (official code).
        weight_decay: :math:`\lambda`, decoupled but multiplied by lr (official code), default 0.
        hessian_power: :math:`k \in [0, 1]`, default 1 (paper; torch-optimizer defaults to 0.5).
        average_conv_kernel: spatially average tensors of 3-5 dimensions, default True.
        seed: seeds the probe generators (a probe is a function of seed, step and the
            parameter's position), default 0.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the update (:mod:`steepest.optim._fused`; ``None``, the default: not
            fused). The Hessian-vector product stays eager; the compiled
            update reads its estimate.

    Requirements: gradients with a graph, ``loss.backward(create_graph=True)`` (capability
    ``needs_create_graph``); a closure is optional and must follow the closure contract. Without
    a graph ``step`` raises ``RuntimeError``. After the Hessian-vector product the optimizer
    replaces each ``p.grad`` by its detached value, so no graph outlives the step. Cost: one extra
    backward pass per step (about 2x an SGD step).

    Not with ``torch.compile(model)``: the Hessian-vector product differentiates the gradient a
    second time, and the AOTAutograd stage of ``torch.compile`` does not support double backward
    (``RuntimeError: torch.compile with aot_autograd does not currently support double
    backward``, torch 2.13). Compile nothing, or only the optimizer's update (``fused=True``).

    Mixed precision: under bfloat16 autocast the suggested lr of 0.15 (the official default,
    tuned in float32) diverges on a small model (measured: loss 5.7 -> 52 in 12 steps), while
    lr=0.03 trains it; start lower under bf16 (about 0.03) and tune from there.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = steepest.AdaHessian([w], lr=0.1)
        >>> (w ** 2).sum().backward(create_graph=True)
        >>> _ = opt.step()
        >>> w.detach()
        tensor([ 0.9000, -1.8000])
    """

    param_state = ("exp_avg", "exp_hessian_diag_sq")
    scalar_state = ("step",)
    capabilities: ClassVar[Capabilities] = replace(HutchinsonOptimizer.capabilities, supports_fused=True)
    fused_constant_hyperparameters = frozenset({"hessian_power"})
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = MappingProxyType(
        {
            "hessian_power": Interval(0.0, 1.0),
            "average_conv_kernel": Boolean(),
            "seed": Integer(0),
        }
    )

    def __init__(
        self,
        params: Any,
        lr: float = 0.15,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-4,
        weight_decay: float = 0.0,
        hessian_power: float = 1.0,
        average_conv_kernel: bool = True,
        seed: int = 0,
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
            hessian_power=hessian_power,
            average_conv_kernel=average_conv_kernel,
            seed=seed,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )

    def _estimate_due(self, param: Tensor, group: ParamGroup) -> bool:
        return True

    def _curvature(self, param: Tensor, group: ParamGroup) -> Tensor:
        _, product = self._hessian[param]
        return spatial_average(product.abs(), group["average_conv_kernel"])

    def _curvature_for_square(self, param: Tensor, group: ParamGroup) -> Tensor:
        """A tensor whose square is ``_curvature(param) ** 2``: ``Hz`` itself where nothing is averaged.

        ``|Hz|^2 = (Hz)^2`` exactly, so the foreach path skips the parameter-sized ``abs`` temporary.
        """
        _, product = self._hessian[param]
        if product.dim() <= 2 or not group["average_conv_kernel"]:
            return product
        return self._curvature(param, group)

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        power = group["hessian_power"]
        for param, grad, state in zip(params, grads, states, strict=True):
            step = increment_step(state["step"])
            diag = self._curvature(param, group)
            exp_avg, exp_hess = state["exp_avg"], state["exp_hessian_diag_sq"]
            add_scaled_(exp_avg.mul_(beta1), grad, 1.0 - beta1)
            addcmul_scaled_(exp_hess.mul_(beta2), diag, diag, 1.0 - beta2)
            bc1, bc2 = bias_correction(beta1, step), bias_correction(beta2, step)
            denom = exp_hess.sqrt().pow_(power).div_(materialized(bc2 ** (0.5 * power))).add_(eps)
            update = add_scaled_((exp_avg / bc1).div_(denom), param, wd)
            add_scaled_(param, update, -lr)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        power = group["hessian_power"]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_hess = [s["exp_hessian_diag_sq"] for s in states]
        steps = increment_steps([s["step"] for s in states])
        diags = [self._curvature_for_square(p, group) for p in params]
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
        torch._foreach_mul_(exp_hess, beta2)
        torch._foreach_addcmul_(exp_hess, diags, diags, value=1.0 - beta2)
        # One temporary list: the denominator, turned in place into the update
        # m / (bc1 * denom) + wd * p (m / bc1 / denom taken as m * (1 / denom) / bc1). A second
        # parameter-sized list is fresh memory to fault in every step on CPU.
        update = torch._foreach_sqrt(exp_hess)
        torch._foreach_pow_(update, power)
        torch._foreach_div_(update, [bias_correction(beta2, s) ** (0.5 * power) for s in steps])
        torch._foreach_add_(update, eps)
        torch._foreach_reciprocal_(update)
        torch._foreach_mul_(update, exp_avgs)
        torch._foreach_div_(update, [bias_correction(beta1, s) for s in steps])
        torch._foreach_add_(update, params, alpha=wd)
        torch._foreach_add_(params, update, alpha=-lr)
