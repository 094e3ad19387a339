"""Sophia: a clipped diagonal second-order optimizer (Hutchinson variant SophiaH, Gauss-Newton-Bartlett SophiaG)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from steepest.optim._base import Capabilities, ParamGroup, SteepestOptimizer
from steepest.optim._curvature_base import HutchinsonOptimizer
from steepest.optim._estimators import PROBES, GaussNewtonBartlett, sampled_cross_entropy
from steepest.optim._functional import (
    add_scaled_,
    addcmul_scaled_,
    decay_weights_,
    foreach_decay_weights_,
    increment_step,
    materialized,
)
from steepest.optim._validation import POSITIVE, Integer, OneOf, Rule

__all__ = ["SophiaG", "SophiaH", "sampled_cross_entropy"]


class SophiaH(HutchinsonOptimizer):
    r"""Sophia-H: Sophia with Hutchinson's Hessian-diagonal estimator, refreshed every k steps.

    Paper: Liu, Li, Hall, Liang, Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for Language
    Model Pre-training", ICLR 2024, arXiv:2305.14342, Algorithm 3 with the Hutchinson estimator (Algorithm 1).
    The official code (Liuhong99/Sophia) ships only Sophia-G; this follows the paper.

    Update rule, with :math:`t` counted from 1:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        h_t &= \beta_2 h_{t-k} + (1-\beta_2)\, u \odot (H_t u) \quad \text{if } t \bmod k = 1,
            \text{ else } h_t = h_{t-1} \\
        \theta_t &= \theta_{t-1}(1 - \eta\lambda) - \eta\, \mathrm{clip}\big(m_t / \max(\rho h_t, \epsilon), 1\big)

    where :math:`\mathrm{clip}(z, 1) = \max(\min(z, 1), -1)` elementwise and :math:`u` is a fresh
    probe (Gaussian as the paper, or Rademacher). :math:`h` may be negative; then
    :math:`\max(\rho h, \epsilon) = \epsilon` and the coordinate takes a sign step of size :math:`\eta`.

    Differences from the paper: none in the math. ``maximize`` negates gradients *and* the
    Hessian estimate (it minimises the negated objective). Probes come from seeded generators.

    State per parameter: ``step`` (scalar), ``exp_avg`` (:math:`m`), ``hessian`` (:math:`h`).

    Args:
        params: parameters or param groups.
        lr: :math:`\eta`, default 6e-2 (the defaults of kozistr's pytorch-optimizer SophiaH; the
            paper tunes lr per model).
        betas: :math:`(\beta_1, \beta_2)`, default (0.96, 0.99) (paper, Section 3).
        rho: :math:`\rho` (the paper's :math:`\gamma`), default 0.01 (paper, Sophia-H).
        weight_decay: decoupled :math:`\lambda`, default 0.
        eps: :math:`\epsilon`, default 1e-12 (paper).
        update_period: :math:`k`, default 10 (paper).
        probe: ``"gaussian"`` (paper, default) or ``"rademacher"``.
        seed: seeds the probe generators, default 0.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the update (:mod:`steepest.optim._fused`; ``None``, the default: not
            fused). The Hessian-vector product stays eager; the update reads its estimate, so a step
            with an estimate and a step without are two compiled graphs.

    Requirements: gradients with a graph (``loss.backward(create_graph=True)``, capability
    ``needs_create_graph``) on steps where an estimate is due; ``step`` raises ``RuntimeError``
    otherwise. A closure is optional and follows the closure contract. The graph is released
    (``p.grad`` detached) at every step. Not with ``torch.compile(model)``: the Hessian-vector
    product differentiates the gradient a second time, and torch's AOTAutograd does not support
    double backward ("torch.compile with aot_autograd does not currently support double backward", torch 2.13);
    run the model eagerly. Not with ``torch.amp.GradScaler`` (refused with a ``RuntimeError``):
    use bfloat16 autocast, which needs no scaler.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = steepest.SophiaH([w], lr=0.1, rho=1.0, probe="rademacher")
        >>> (w ** 2).sum().backward(create_graph=True)
        >>> _ = opt.step()
        >>> w.detach()  # h = 0.01 * u * (2u) = 0.02 < |m| = 0.04 * |g|: clipped to a sign step
        tensor([ 0.9000, -1.9000])
    """

    param_state = ("exp_avg", "hessian")
    scalar_state = ("step",)
    probe_distribution = None
    capabilities: ClassVar[Capabilities] = replace(HutchinsonOptimizer.capabilities, supports_fused=True)
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = MappingProxyType(
        {"rho": POSITIVE, "update_period": Integer(1), "probe": OneOf(PROBES), "seed": Integer(0)}
    )

    def __init__(
        self,
        params: Any,
        lr: float = 6e-2,
        betas: tuple[float, float] = (0.96, 0.99),
        rho: float = 0.01,
        weight_decay: float = 0.0,
        eps: float = 1e-12,
        update_period: int = 10,
        probe: str = "gaussian",
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
            rho=rho,
            weight_decay=weight_decay,
            eps=eps,
            update_period=update_period,
            probe=probe,
            seed=seed,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )

    def _estimate_due(self, param: Tensor, group: ParamGroup) -> bool:
        return (self._next_step(param) - 1) % group["update_period"] == 0

    def _fresh_estimate(self, param: Tensor, group: ParamGroup) -> Tensor | None:
        if param not in self._hessian:
            return None
        diagonal, _ = self._hessian[param]
        return -diagonal if group["maximize"] else diagonal

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), rho = group["lr"], group["betas"], group["rho"]
        eps, wd = group["eps"], group["weight_decay"]
        for param, grad, state in zip(params, grads, states, strict=True):
            increment_step(state["step"])
            exp_avg, hessian = state["exp_avg"], state["hessian"]
            add_scaled_(exp_avg.mul_(beta1), grad, 1.0 - beta1)
            estimate = self._fresh_estimate(param, group)
            if estimate is not None:
                add_scaled_(hessian.mul_(beta2), estimate, 1.0 - beta2)
            decay_weights_(param, lr, wd)
            ratio = exp_avg / (hessian * materialized(rho)).clamp_(min=eps)
            add_scaled_(param, ratio.clamp_(-1.0, 1.0), -lr)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, (beta1, beta2), rho = group["lr"], group["betas"], group["rho"]
        eps, wd = group["eps"], group["weight_decay"]
        exp_avgs = [s["exp_avg"] for s in states]
        hessians = [s["hessian"] for s in states]
        torch._foreach_add_([s["step"] for s in states], 1.0)
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
        estimates = [self._fresh_estimate(p, group) for p in params]
        fresh = [(h, e) for h, e in zip(hessians, estimates, strict=True) if e is not None]
        if fresh:
            torch._foreach_mul_([h for h, _ in fresh], beta2)
            torch._foreach_add_([h for h, _ in fresh], [e for _, e in fresh], alpha=1.0 - beta2)
        foreach_decay_weights_(params, lr, wd)
        ratios = torch._foreach_mul(hessians, rho)  # one temporary list: max(rho h, eps), then m / it
        torch._foreach_clamp_min_(ratios, eps)
        torch._foreach_reciprocal_(ratios)
        torch._foreach_mul_(ratios, exp_avgs)
        torch._foreach_clamp_min_(ratios, -1.0)
        torch._foreach_clamp_max_(ratios, 1.0)
        torch._foreach_add_(params, ratios, alpha=-lr)


class SophiaG(SteepestOptimizer):
    r"""Sophia-G: Sophia with the Gauss-Newton-Bartlett Hessian-diagonal estimator.

    Paper: Liu, Li, Hall, Liang, Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for Language
    Model Pre-training", ICLR 2024, arXiv:2305.14342, Algorithm 2 (GNB) and Algorithm 3. Follows the official code
    (Liuhong99/Sophia@a7e1572 ``sophia.py``, PyPI ``sophia-opt==0.2.2``), which reparameterises
    the paper: code ``lr`` = paper :math:`\rho\eta`, and the batch size :math:`B` of the estimator
    :math:`\hat h = B\,\hat g \odot \hat g` moves into the step as ``bs``.

    Step (every call), with gradient :math:`g`:

    .. math::

        \theta &\leftarrow \theta (1 - \eta\lambda), \qquad m \leftarrow \beta_1 m + (1-\beta_1) g \\
        \theta &\leftarrow \theta - \eta\, \mathrm{sign}(m)
            \min\!\Big(\frac{|m|}{\rho \cdot bs \cdot h + 10^{-15}}, 1\Big)

    Hessian refresh (:meth:`update_hessian`, every ``update_period`` steps): with :math:`\hat g` the
    gradient of the mini-batch loss under labels sampled from the model
    (:func:`sampled_cross_entropy`), :math:`h \leftarrow \beta_2 h + (1-\beta_2)\,\hat g \odot \hat g`.

    Until the first refresh :math:`h = 0`, the ratio is 1 and steps are sign-momentum steps.

    Differences from the paper (all as the official code): no bias correction; ``lr`` and ``bs``
    reparameterised as above; the clip uses :math:`+10^{-15}` in the denominator instead of
    :math:`\max(\cdot, \epsilon)`. The official training script samples fresh batches for the
    estimator and clips their gradient norm to 1; that is the caller's closure's business.
    The refresh is the caller's call (or ``step(..., hessian_closure=...)``), as in the official
    training loop, because only the caller has the logits.

    State per parameter: ``step`` (scalar), ``exp_avg`` (:math:`m`), ``hessian`` (:math:`h`).

    Args:
        params: parameters or param groups.
        lr: :math:`\eta`, default 1e-4 (official class default; its GPT-2 runs use 3e-4 - 7e-4).
        betas: :math:`(\beta_1, \beta_2)`, default (0.965, 0.99) (official code).
        rho: :math:`\rho`, default 0.04 (official code).
        weight_decay: decoupled :math:`\lambda`, default 0.1 (official code).
        bs: the batch size :math:`B` folded into the step (tokens per step for language
            models), default 5120 (official ``step(bs=5120)``).
        update_period: :math:`k` for ``step(..., hessian_closure=...)``, default 10 (official);
            per group (each group is refreshed on its own period).
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path (``None``: yes).
        fused: compile the step's update (:mod:`steepest.optim._fused`; ``None``, the default: not
            fused). :meth:`update_hessian` stays eager (one
            multiply-add every ``update_period`` steps).

    Requirements: plain gradients (no graph, no closure) for :meth:`step`; a closure computing
    the sampled-label loss for :meth:`update_hessian`.

    Example:
        >>> import torch, steepest
        >>> from steepest.optim.sophia import sampled_cross_entropy
        >>> model = torch.nn.Linear(4, 3)
        >>> opt = steepest.SophiaG(model.parameters(), lr=1e-3)
        >>> x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        >>> def sampled() -> torch.Tensor:  # the GNB closure: labels sampled from the model
        ...     opt.zero_grad()
        ...     loss = sampled_cross_entropy(model(x))
        ...     if torch.is_grad_enabled():
        ...         loss.backward()
        ...     return loss
        >>> for _ in range(20):
        ...     opt.zero_grad()
        ...     torch.nn.functional.cross_entropy(model(x), y).backward()
        ...     _ = opt.step(hessian_closure=sampled)
        >>> bool((opt.state[model.weight]["hessian"] > 0).all())
        True
    """

    capabilities = Capabilities(supports_fused=True)
    param_state = ("exp_avg", "hessian")
    scalar_state = ("step",)
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = MappingProxyType(
        {"rho": POSITIVE, "bs": POSITIVE, "update_period": Integer(1)}
    )

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 0.1,
        bs: float = 5120,
        update_period: int = 10,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            rho=rho,
            weight_decay=weight_decay,
            bs=bs,
            update_period=update_period,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        self._estimator = GaussNewtonBartlett()

    @torch.no_grad()
    def step(
        self, closure: Callable[[], Any] | None = None, *, hessian_closure: Callable[[], Any] | None = None
    ) -> Any:
        r"""One Sophia-G step; then, every ``update_period`` steps, a Hessian refresh.

        Args:
            closure: optional; re-evaluates the loss and back-propagates (closure contract).
            hessian_closure: optional; computes the sampled-label loss (e.g. with
                :func:`sampled_cross_entropy`) and back-propagates. When given, it is called after
                steps :math:`t` with :math:`t \bmod k = 0` (the official loop's
                ``iter % k == k - 1``), with each group's own :math:`k` (``update_period``): one
                call refreshes every group that is due, and only those; the gradients it leaves
                are then cleared (set to None).
        """
        loss = super().step(closure)
        if hessian_closure is not None:
            due = [group for group in self.param_groups if self._refresh_due(group)]
            if due:
                self._update_hessian(hessian_closure, due)
        return loss

    def _refresh_due(self, group: ParamGroup) -> bool:
        """Whether ``group``'s Hessian is refreshed after this step: its step count is a multiple of its period."""
        first = next((p for p in group["params"] if self.state.get(p)), None)
        return first is not None and int(self.state[first]["step"]) % group["update_period"] == 0

    @torch.no_grad()
    def update_hessian(self, closure: Callable[[], Any] | None = None) -> Any:
        r"""Refresh :math:`h \leftarrow \beta_2 h + (1-\beta_2)\,\hat g \odot \hat g` from sampled-label gradients.

        Args:
            closure: computes the loss with labels sampled from the model's predictive
                distribution and back-propagates (closure contract). Without it the current
                ``p.grad`` is taken to be such a gradient (the official ``update_hessian()``).
                When a closure is given the gradients it leaves are cleared afterwards.

        Returns:
            The closure's loss, or None.
        """
        return self._update_hessian(closure, self.param_groups)

    def _update_hessian(self, closure: Callable[[], Any] | None, groups: list[ParamGroup]) -> Any:
        """:meth:`update_hessian` for ``groups`` only (the closure's gradients are cleared in every group)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in groups:
            params, grads = self._params_with_grad(group)
            beta2 = group["betas"][1]
            squares = self._estimator.estimate(grads)
            for p, square in zip(params, squares, strict=True):
                state = self.state[p]
                if not state:
                    self._init_state(p, group, state)
                state["hessian"].mul_(beta2).add_(square, alpha=1.0 - beta2)
        if closure is not None:
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad = None
        return loss

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, beta1, rho, bs, wd = group["lr"], group["betas"][0], group["rho"], group["bs"], group["weight_decay"]
        for param, grad, state in zip(params, grads, states, strict=True):
            increment_step(state["step"])
            exp_avg = state["exp_avg"]
            decay_weights_(param, lr, wd)
            add_scaled_(exp_avg.mul_(beta1), grad, 1.0 - beta1)
            ratio = (exp_avg.abs() / (state["hessian"] * materialized(rho * bs) + 1e-15)).clamp_(max=1.0)
            addcmul_scaled_(param, exp_avg.sign(), ratio, -lr)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, beta1, rho, bs, wd = group["lr"], group["betas"][0], group["rho"], group["bs"], group["weight_decay"]
        exp_avgs = [s["exp_avg"] for s in states]
        torch._foreach_add_([s["step"] for s in states], 1.0)
        foreach_decay_weights_(params, lr, wd)
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
        # One temporary list, reused in place: sign(m) min(|m| / t, 1) = clamp(m / t, -1, 1) for
        # t = rho bs h + 1e-15 > 0, with m / t taken as m * (1 / t) (one rounding more). Three
        # parameter-sized temporaries (|m|, the ratio, sign(m)) doubled the step time on CPU,
        # where each is fresh memory to fault in every step.
        ratios = torch._foreach_mul([s["hessian"] for s in states], rho * bs)
        torch._foreach_add_(ratios, 1e-15)
        torch._foreach_reciprocal_(ratios)
        torch._foreach_mul_(ratios, exp_avgs)
        torch._foreach_clamp_min_(ratios, -1.0)
        torch._foreach_clamp_max_(ratios, 1.0)
        torch._foreach_add_(params, ratios, alpha=-lr)
