"""M-FAC: matrix-free inverse empirical-Fisher products over a sliding window of gradients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from steepest.optim._base import SCALAR_DTYPE, Capabilities, ParamGroup, StateSpec, SteepestOptimizer
from steepest.optim._validation import POSITIVE, Integer, Rule


def _window_dtype(param: Tensor) -> torch.dtype:
    return torch.promote_types(param.dtype, torch.float32)


class MFAC(SteepestOptimizer):
    r"""M-FAC: preconditioning by the inverse of a damped empirical Fisher of the last m gradients.

    Paper: Frantar, Kurtic, Alistarh, "M-FAC: Efficient Matrix-Free Approximations of
    Second-Order Information", NeurIPS 2021, arXiv:2107.03356. Official code: IST-DASLab/M-FAC
    (``optim.py``: ``MFAC``, ``HInvFastUpMulti``).

    With the window :math:`G \in \mathbb{R}^{m \times d}` of the last :math:`m` gradients (rows;
    slots not yet filled are zero) and damping :math:`\lambda`, the empirical Fisher is

    .. math::

        \hat F = \lambda I + \frac{1}{m} \sum_{i=1}^{m} g_i g_i^\top = \lambda I + \tfrac1m G^\top G .

    Each step puts :math:`\tilde g = g + \mu_{wd}\,\theta` (L2 decay, as the official code) into
    the window in place of the oldest gradient, then (Woodbury)

    .. math::

        u &= \hat F^{-1} \tilde g
           = \tfrac{1}{\lambda}\big(\tilde g - G^\top (m\lambda I + G G^\top)^{-1} G \tilde g\big) \\
        v &\leftarrow \beta v + (1-\beta) u \ (\text{if } \beta > 0;\ u \leftarrow v), \qquad
        \theta \leftarrow \theta - \eta\, u

    Cost per step: :math:`O(dm)` for the new Gram row :math:`G\tilde g` and for :math:`G^\top c`,
    plus an :math:`O(m^3)` solve of the :math:`m \times m` system, independent of :math:`d` (the
    official code also refactors an :math:`m \times m` matrix every step). The Gram matrix is
    kept, updated by one row and column per step, and the solve is done in float64.

    Differences from the official code: the official dynamic algorithm (an LU-based recursion)
    is replaced by the mathematically identical Woodbury solve above; the Fisher spans all param
    groups (as the official, which has one group), each group applying its own lr; ``maximize``
    is added. A parameter without a gradient in a step keeps its window slot and is left out of
    that step's Fisher; a group with ``lr=0`` still feeds the Fisher.

    State per parameter: ``step`` (scalar), ``grad_window`` (:math:`m` × the parameter's shape),
    ``gram`` (:math:`m \times m`, this parameter's share of :math:`GG^\top`), and
    ``momentum_buffer`` (like the parameter) when ``momentum > 0``. Windows and Grams are at least
    float32 (as the official, which always stores float32). Memory: :math:`m` times the model,
    the method's nature.

    Args:
        params: parameters or param groups.
        lr: :math:`\eta`, default 1e-3 (official ``main_optim.py``).
        momentum: :math:`\beta` of the EMA of preconditioned steps, default 0 (official).
        weight_decay: L2 coefficient added to the gradient before preconditioning, default 0.
        ngrads: window size :math:`m`, default 1024 (official). The same in every group.
        damp: :math:`\lambda`, default 1e-5 (official). The same in every group.
        maximize: ascend the objective instead.
        foreach: accepted for interface compatibility; the work is per-tensor matrix products,
            so both settings run the same code.

    Requirements: gradients only; no closure.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = steepest.MFAC([w], lr=0.5, ngrads=4, damp=1.0)
        >>> w.grad = torch.tensor([2.0, 0.0])
        >>> _ = opt.step()  # F = I + g g^T / 4 = diag(2, 1): u = F^{-1} g = (1, 0)
        >>> w.detach()
        tensor([ 0.5000, -2.0000])
    """

    capabilities: ClassVar[Capabilities] = Capabilities(elementwise=False, global_statistic=True)
    dtensor_refusal: ClassVar[str | None] = (
        "the full flattened gradient: it keeps a history of whole gradients and their Gram matrix"
    )
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = MappingProxyType({"ngrads": Integer(1), "damp": POSITIVE})

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        ngrads: int = 1024,
        damp: float = 1e-5,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            ngrads=ngrads,
            damp=damp,
            maximize=maximize,
            foreach=foreach,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; ``ngrads`` and ``damp`` must match the other groups' (one Fisher spans them)."""
        for key in ("ngrads", "damp"):
            if self.param_groups and key in param_group and param_group[key] != self.param_groups[0][key]:
                raise ValueError(f"MFAC: every param group must share {key} (one Fisher spans all groups)")
        super().add_param_group(param_group)

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``grad_window`` (m, *shape), ``gram`` (m, m), ``step``, and ``momentum_buffer`` if momentum."""
        m, dtype = group["ngrads"], _window_dtype(param)
        shapes: StateSpec = {
            "step": ((), SCALAR_DTYPE),
            "grad_window": ((m, *param.shape), dtype),
            "gram": ((m, m), dtype),
        }
        if group["momentum"] > 0:
            shapes["momentum_buffer"] = (tuple(param.shape), param.dtype)
        return shapes

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One M-FAC step over all param groups; ``closure`` (optional) follows the closure contract."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        gathered = [self._params_with_grad(group) for group in self.param_groups]
        items: list[tuple[ParamGroup, Tensor, Tensor, dict[str, Any]]] = []
        for group, (params, grads) in zip(self.param_groups, gathered, strict=True):
            for p, g in zip(params, grads, strict=True):
                state = self.state[p]
                if not state:
                    self._init_state(p, group, state)
                items.append((group, p, g, state))
        if not items:
            return loss
        m, damp = self.param_groups[0]["ngrads"], self.param_groups[0]["damp"]
        gram_total = torch.zeros((m, m), dtype=torch.float64, device=items[0][1].device)
        projection = torch.zeros(m, dtype=torch.float64, device=gram_total.device)
        fresh = []
        for group, p, g, state in items:
            slot = int(state["step"]) % m
            state["step"].add_(1.0)
            window, gram = state["grad_window"], state["gram"]
            g = g.to(window.dtype)
            if group["maximize"]:
                g = -g
            if group["weight_decay"] != 0:
                g = g + group["weight_decay"] * p.to(window.dtype)
            window[slot].copy_(g)
            row = window.reshape(m, -1) @ g.reshape(-1)
            gram[slot, :] = row
            gram[:, slot] = row
            gram_total += gram.to(device=gram_total.device, dtype=torch.float64)
            projection += row.to(device=gram_total.device, dtype=torch.float64)
            fresh.append(g)
        system = gram_total + m * damp * torch.eye(m, dtype=torch.float64, device=gram_total.device)
        coefficients = torch.linalg.solve(system, projection)
        for (group, p, _, state), g in zip(items, fresh, strict=True):
            window = state["grad_window"]
            c = coefficients.to(device=window.device, dtype=window.dtype)
            direction = (g - (c @ window.reshape(m, -1)).reshape(g.shape)).div_(damp)
            if group["momentum"] > 0:
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(direction.to(buffer.dtype), alpha=1.0 - group["momentum"])
                direction = buffer
            p.add_(direction.to(p.dtype), alpha=-group["lr"])
        return loss

