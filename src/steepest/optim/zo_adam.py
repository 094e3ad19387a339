"""ZO-Adam: Adam on the SPSA gradient estimate."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from torch import Tensor

from steepest.optim._validation import NON_NEGATIVE, Rule
from steepest.optim.mezo import ZO_RULES, ActiveParam, ZerothOrderOptimizer, decays


class ZOAdam(ZerothOrderOptimizer):
    r"""ZO-Adam: Adam driven by MeZO's two-point gradient estimate.

    Papers: Chen, Zhou, Xu, Hong, Liu, "ZO-AdaMM: Zeroth-Order Adaptive Momentum Method for
    Black-Box Optimization", NeurIPS 2019, arXiv:1910.06513; as "ZO-Adam" for LLM fine-tuning
    in Zhang et al., "Revisiting Zeroth-Order Optimization for Memory-Efficient LLM
    Fine-Tuning: A Benchmark", ICML 2024, arXiv:2402.11592 (ZO-Bench, which this follows).

    Update rule, with :math:`\hat g = g z`, :math:`g = (L(\theta+\epsilon z) - L(\theta-\epsilon z))/(2\epsilon)`,
    :math:`z \sim N(0, I)` regenerated from a seed (torch.optim.Adam's math on :math:`\hat g`):

    .. math::

        \hat g &\leftarrow \hat g + \lambda\theta \\
        m &\leftarrow \beta_1 m + (1-\beta_1)\hat g, \qquad
        v \leftarrow \beta_2 v + (1-\beta_2)\hat g^2 \\
        \theta &\leftarrow \theta - \frac{\eta}{1-\beta_1^t}\,
            \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \delta}

    State per parameter: ``exp_avg`` and ``exp_avg_sq`` (like the parameter; float32 with a
    master copy), ``step`` (float32), ``seed`` (int64), ``projected_grad`` (float32), and
    ``master`` with ``master_weights``. Unlike MeZO this is two extra copies of the model.

    Differences from the papers: ZO-AdaMM uses AMSGrad's :math:`\hat v = \max(\hat v, v)`
    and averages several directions; ZO-Bench (and we) use plain Adam with bias correction
    and one direction per step. Weight decay is coupled (L2, as ZO-Bench's torch Adam), with
    MeZO's name exemptions.

    Args:
        params: parameters, param groups, or ``model.named_parameters()``.
        lr: step size :math:`\eta`, default 1e-4 (Adam-scale; ZO-Bench's OPT grid is 1e-5..1e-4).
        eps: perturbation scale :math:`\epsilon`, default 1e-3 (MeZO, ZO-Bench).
        betas: :math:`(\beta_1, \beta_2)`, default (0.9, 0.999) (torch Adam, ZO-Bench).
        adam_eps: :math:`\delta` in the denominator, default 1e-8.
        weight_decay: L2 coefficient :math:`\lambda`, default 0.
        seed: base seed of the random streams.
        master_weights: float32 master copy (and moments) for float16/bfloat16 parameters.
        maximize: ascend the objective instead.
        foreach: accepted; both paths are the same per-tensor loop.

    Requirements: a closure that runs the forward pass and returns the loss (called twice per
    step under ``torch.no_grad()``; a torch-style closure with an unconditional ``backward()``
    works too, at a backward pass per call, see
    :class:`~steepest.optim.mezo.ZerothOrderOptimizer`). ``.grad`` is left as it was.
    """

    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = {**ZO_RULES, "adam_eps": NON_NEGATIVE}
    zo_param_state = ("exp_avg", "exp_avg_sq")
    zo_scalar_state = ("step",)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        eps: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        weight_decay: float = 0.0,
        seed: int = 0,
        master_weights: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            eps=eps,
            betas=betas,
            adam_eps=adam_eps,
            weight_decay=weight_decay,
            seed=seed,
            master_weights=master_weights,
            maximize=maximize,
            foreach=foreach,
        )

    def _update_param(self, entry: ActiveParam, g: Tensor) -> None:
        group, target, state = entry.group, entry.target, entry.state
        beta1, beta2 = group["betas"]
        grad = entry.direction().mul_(g)
        if group["weight_decay"] != 0 and decays(group, entry.index_in_group):
            grad.add_(target, alpha=group["weight_decay"])
        state["step"] += 1
        step = float(state["step"])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
        denom = exp_avg_sq.sqrt().div_(math.sqrt(bias_correction2)).add_(group["adam_eps"])
        target.addcdiv_(exp_avg, denom, value=-group["lr"] / bias_correction1)
