"""The step shared by optimizers that precondition with a Hutchinson Hessian diagonal.

:class:`HutchinsonOptimizer` runs, once per step and across all param groups: gather the
gradients (which must carry an autograd graph), decide which parameters get a fresh estimate,
take **one** Hessian-vector product with seeded probes (Hutchinson's estimator, :mod:`~steepest.optim._estimators`),
release the double-backward graph, then hand the per-group elementwise update the estimates.
AdaHessian and Sophia-H build on it; the estimator itself lives in ``_estimators``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from steepest.optim._base import Capabilities, ParamGroup, SteepestOptimizer
from steepest.optim._estimators import (
    RankAveraging,
    draw_probe,
    hessian_vector_products,
    probe_seed,
    release_graph,
    require_graph,
)
from steepest.optim._linesearch import refuse_grad_scaler


class HutchinsonOptimizer(RankAveraging, SteepestOptimizer):
    """Base for optimizers whose step needs ``u ⊙ Hu`` (or ``Hu``) from gradients built with a graph.

    Subclasses take a ``seed`` hyperparameter, implement :meth:`_estimate_due` and read the
    estimate of parameter ``p`` for this step from ``self._hessian[p]`` (a tuple
    ``(u ⊙ Hu, Hu)``; absent when no estimate was taken for ``p``) in their updates.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(needs_create_graph=True)
    dtensor_refusal: ClassVar[str | None] = (
        "Hessian-vector products through gradients with an autograd graph (backward(create_graph=True)); "
        "FSDP2's reduce-scatter returns gradients without one"
    )
    #: The probe distribution the estimator draws (``None``: read from the group's ``probe``).
    probe_distribution: ClassVar[str | None] = "rademacher"

    @abstractmethod
    def _estimate_due(self, param: Tensor, group: ParamGroup) -> bool:
        """Whether ``param`` gets a fresh Hessian estimate in the step about to be taken."""

    def _next_step(self, param: Tensor) -> int:
        state = self.state[param]
        return int(state["step"]) + 1 if state else 1

    #: ``GradScaler.step`` then hands ``grad_scale``/``found_inf`` over instead of unscaling, and
    #: ``step`` refuses with an error naming bfloat16 autocast (``refuse_grad_scaler``).
    _step_supports_amp_scaling: ClassVar[bool] = True

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Args:
            closure: optional; re-evaluates the loss and calls ``loss.backward(create_graph=True)``
                when grad mode is on (the library's closure contract). Without it, call
                ``loss.backward(create_graph=True)`` before ``step()``.

        Raises:
            RuntimeError: the gradients have no autograd graph, or a gradient is sparse.
        """
        refuse_grad_scaler(self, "hvp")
        name = type(self).__name__
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        gathered = [self._params_with_grad(group) for group in self.param_groups]
        self._hessian: dict[Tensor, tuple[Tensor, Tensor]] = {}
        #: What the last step did; ``hvp_evals`` lets a benchmark charge the products it made.
        self.last_info: dict[str, Any] = {"hvp_evals": 0}
        try:
            due_params: list[Tensor] = []
            all_params: list[Tensor] = []
            grads_all: list[Tensor] = []
            seeds: list[tuple[int, str]] = []
            index = 0
            for group, (params, grads) in zip(self.param_groups, gathered, strict=True):
                with_grad = {id(p): g for p, g in zip(params, grads, strict=True)}
                for p in group["params"]:
                    if id(p) in with_grad:
                        all_params.append(p)
                        grads_all.append(with_grad[id(p)])
                        if self._estimate_due(p, group):
                            due_params.append(p)
                            seed = probe_seed(group["seed"], self._next_step(p), index)
                            seeds.append((seed, self.probe_distribution or str(group["probe"])))
                    index += 1
            if due_params:
                # Every gradient takes part in the product: a parameter not due still couples.
                require_graph(name, grads_all)
                probes = {p: draw_probe(p, dist, seed) for p, (seed, dist) in zip(due_params, seeds, strict=True)}
                vectors = [probes.get(p, torch.zeros_like(p)) for p in all_params]
                products = hessian_vector_products(all_params, grads_all, vectors)
                self._average_over_ranks(products)
                self.last_info["hvp_evals"] = 1
                for p, hv in zip(all_params, products, strict=True):
                    if p in probes:
                        self._hessian[p] = (probes[p] * hv, hv)
        finally:
            release_graph([p for params, _ in gathered for p in params])
        self._average_over_ranks([p.grad for params, _ in gathered for p in params if p.grad is not None])
        try:
            jobs = []
            for group, (params, _) in zip(self.param_groups, gathered, strict=True):
                if not params:
                    continue
                # release_graph replaced each p.grad by its detached value.
                grads = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in params]
                states = []
                for p in params:
                    state = self.state[p]
                    if not state:
                        self._init_state(p, group, state)
                    states.append(state)
                if group["maximize"]:
                    grads = list(torch._foreach_neg(grads))
                jobs.append((group, params, grads, states))
            self._update_groups(jobs)
        finally:
            self._hessian = {}
        return loss
