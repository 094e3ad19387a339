"""FRUGAL: a state-full AdamW subspace plus a state-free signSGD remainder (coordinate variant)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from steepest.optim._base import SCALAR_DTYPE, Capabilities, ParamGroup, StateSpec, SteepestOptimizer
from steepest.optim._functional import (
    adamw_step_,
    bias_correction,
    foreach_adamw_step_,
    increment_step,
    update_moments_,
)
from steepest.optim._validation import NON_NEGATIVE, Boolean, Integer, Interval, OneOf, Rule


def _subspace_size(param: Tensor, group: ParamGroup) -> tuple[int, int]:
    """(size of the space the coordinates are drawn from, number drawn)."""
    choice = group["coord_choice"]
    space = param.numel() if choice == "randk" else int(param.shape[1] if choice == "columns" else param.shape[0])
    return space, int(space * group["density"])


class FRUGAL(SteepestOptimizer):
    r"""FRUGAL with random coordinates: AdamW on a subspace, signSGD on the rest.

    Paper: Zmushko, Beznosikov, Takáč, Horváth, "FRUGAL: Memory-Efficient Optimization by
    Reducing State Overhead for Scalable Training", ICML 2025, arXiv:2411.07837; official code
    read at the author's initial commit c7ebe4c (``CoordAdamW``).

    Groups with ``proj_type="coord"`` are projected: every ``update_gap`` steps (counted by the
    parameter's ``step``, 0 included) :math:`k = \lfloor\text{density}\cdot n\rfloor` columns,
    rows or single entries (``coord_choice``) are drawn without replacement; with
    ``reset_statistics`` the moments and ``step`` restart at 0. With :math:`G_S` the gathered
    coordinates, :math:`R = G - \mathrm{scatter}(G_S)` and :math:`\eta' = \eta\cdot`
    ``proj_params_lr_scale``:

    .. math::

        \theta &\leftarrow \theta(1 - \eta\lambda) \\
        m &\leftarrow \beta_1 m + (1-\beta_1) G_S,\quad v \leftarrow \beta_2 v + (1-\beta_2) G_S^2 \\
        \theta &\leftarrow \theta - \frac{\eta'}{1-\beta_1^t}\,
            \mathrm{scatter}\Big(\frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}\Big)
            - \eta'\,\text{inactive\_lr\_scale}\cdot\mathrm{sign}(R)

    (``inactive_update_rule="sgd"`` uses :math:`R` instead of its sign, ``"no"`` drops the term).
    Groups with ``proj_type="none"`` get the same AdamW on the whole tensor at ``lr``.

    Randomness: the draw uses a ``torch.Generator`` seeded from ``seed``, the parameter's
    position in its group and its total step count ``count``; the chosen ``indices`` are kept
    in the state, so a ``state_dict`` round trip continues identically.

    Differences from the official code: the refresh step is read per parameter (the official
    code reads the group's first parameter); only the coordinate variant is implemented
    (``block`` and ``svd`` are not, see the report); draws come from a seeded generator, not
    torch's global RNG.

    State: ``proj_type="none"``: ``exp_avg``, ``exp_avg_sq`` (like the parameter), ``step``.
    ``"coord"``: ``exp_avg``, ``exp_avg_sq`` of the projected shape ((m, k) for columns,
    (k, n) for rows, (k,) for randk), ``indices`` (int64, (k,)), ``step`` and ``count``.

    Args:
        params: parameters or param groups.
        lr: step size, default 1e-3 (official class).
        betas: default (0.9, 0.999) (official class).
        eps: default 1e-8 (official code; its docstring says 1e-6), form (B).
        weight_decay: decoupled, at the base lr, default 0.01 (official class and CLI).
        proj_type: ``"none"`` (plain AdamW, the default) or ``"coord"``.
        density: the state-full fraction, default 0.25 (official).
        update_gap: steps between draws, default 200 (official class; the pre-training CLI uses 50).
        reset_statistics: zero the moments at each draw, default True (official).
        inactive_update_rule: ``"sign_sgd"`` (default), ``"sgd"`` or ``"no"``.
        inactive_lr_scale: default 1.0 (official class; the README uses 0.1 for fine-tuning).
        proj_params_lr_scale: default 1.0 (official).
        coord_choice: ``"columns"`` (class default), ``"rows"`` or ``"randk"``.
        seed: seed of the draws, default 0.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path for unprojected groups (``None``: yes).

    Requirements: gradients only; no closure. ``columns``/``rows`` need 2-D parameters.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.zeros(2, 2))
        >>> opt = steepest.FRUGAL([{"params": [w], "proj_type": "coord", "density": 0.5}], lr=0.1)
        >>> w.grad = torch.tensor([[1.0, -1.0], [2.0, 3.0]])
        >>> _ = opt.step()
        >>> steepest.state_bytes(opt)  # two (2, 1) moments, one int64 index, step and count
        32
    """

    capabilities: ClassVar[Capabilities] = Capabilities(elementwise=False)
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = MappingProxyType(
        {
            "proj_type": OneOf(("none", "coord")),
            "density": Interval(0.0, 1.0, low_open=True),
            "update_gap": Integer(1),
            "reset_statistics": Boolean(),
            "inactive_update_rule": OneOf(("sign_sgd", "sgd", "no")),
            "inactive_lr_scale": NON_NEGATIVE,
            "proj_params_lr_scale": NON_NEGATIVE,
            "coord_choice": OneOf(("columns", "rows", "randk")),
            "seed": Integer(0),
        }
    )

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        proj_type: str = "none",
        density: float = 0.25,
        update_gap: int = 200,
        reset_statistics: bool = True,
        inactive_update_rule: str = "sign_sgd",
        inactive_lr_scale: float = 1.0,
        proj_params_lr_scale: float = 1.0,
        coord_choice: str = "columns",
        seed: int = 0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            proj_type=proj_type,
            density=density,
            update_gap=update_gap,
            reset_statistics=reset_statistics,
            inactive_update_rule=inactive_update_rule,
            inactive_lr_scale=inactive_lr_scale,
            proj_params_lr_scale=proj_params_lr_scale,
            coord_choice=coord_choice,
            seed=seed,
            maximize=maximize,
            foreach=foreach,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, checking that column / row selection gets 2-D parameters."""
        proj = param_group.get("proj_type", self.defaults["proj_type"])
        choice = param_group.get("coord_choice", self.defaults["coord_choice"])
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if proj == "coord" and choice != "randk" and isinstance(p, Tensor) and p.ndim != 2:
                raise ValueError(
                    f"FRUGAL: coord_choice={choice!r} needs 2-D parameters, got shape {tuple(p.shape)} "
                    "(use coord_choice='randk' or proj_type='none')"
                )
        super().add_param_group({**param_group, "params": params})

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """Full-shape Adam state, or projected moments plus the chosen indices."""
        scalar = ((), SCALAR_DTYPE)
        if group["proj_type"] == "none":
            like = (tuple(param.shape), param.dtype)
            return {"exp_avg": like, "exp_avg_sq": like, "step": scalar}
        _, k = _subspace_size(param, group)
        choice = group["coord_choice"]
        if choice == "columns":
            shape: tuple[int, ...] = (int(param.shape[0]), k)
        elif choice == "rows":
            shape = (k, int(param.shape[1]))
        else:
            shape = (k,)
        return {
            "exp_avg": (shape, param.dtype),
            "exp_avg_sq": (shape, param.dtype),
            "indices": ((k,), torch.int64),
            "step": scalar,
            "count": scalar,
        }

    @staticmethod
    def _gather(grad: Tensor, indices: Tensor, choice: str) -> Tensor:
        if choice == "columns":
            return grad.index_select(1, indices)
        if choice == "rows":
            return grad.index_select(0, indices)
        return grad.reshape(-1).index_select(0, indices)

    @staticmethod
    def _scatter(values: Tensor, indices: Tensor, choice: str, like: Tensor) -> Tensor:
        out = torch.zeros_like(like)
        if choice == "columns":
            out.index_copy_(1, indices, values)
        elif choice == "rows":
            out.index_copy_(0, indices, values)
        else:
            out.view(-1).index_copy_(0, indices, values)
        return out

    def _refresh(self, param: Tensor, group: ParamGroup, state: dict[str, Any]) -> None:
        position = next(i for i, q in enumerate(group["params"]) if q is param)
        count = int(state["count"].item())
        gen = torch.Generator().manual_seed(group["seed"] + 1_000_003 * position + 7919 * count)
        space, k = _subspace_size(param, group)
        state["indices"].copy_(torch.randperm(space, generator=gen)[:k].sort().values)
        if group["reset_statistics"]:
            state["exp_avg"].zero_()
            state["exp_avg_sq"].zero_()
            state["step"].zero_()

    def _coord_update(self, group: ParamGroup, param: Tensor, grad: Tensor, state: dict[str, Any]) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        choice = group["coord_choice"]
        if int(state["step"].item()) % group["update_gap"] == 0:
            self._refresh(param, group, state)
        if group["weight_decay"] != 0.0:
            param.mul_(1.0 - lr * group["weight_decay"])
        step = increment_step(state["step"])
        state["count"].add_(1.0)
        indices = state["indices"]
        sub = self._gather(grad, indices, choice)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        update_moments_(exp_avg, exp_avg_sq, sub, beta1, beta2)
        scaled_lr = lr * group["proj_params_lr_scale"]
        denom = (exp_avg_sq.sqrt() / bias_correction(beta2, step) ** 0.5).add_(eps)
        update = self._scatter(exp_avg / denom, indices, choice, param)
        rule = group["inactive_update_rule"]
        if rule != "no":
            residual = grad - self._scatter(sub, indices, choice, param)
            inactive = residual.sign() if rule == "sign_sgd" else residual
            param.add_(inactive, alpha=-scaled_lr * group["inactive_lr_scale"])
        param.add_(update, alpha=-scaled_lr / bias_correction(beta1, step))

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        if group["proj_type"] == "coord":
            for param, grad, state in zip(params, grads, states, strict=True):
                self._coord_update(group, param, grad, state)
            return
        for param, grad, state in zip(params, grads, states, strict=True):
            adamw_step_(param, grad, state, group["lr"], group["betas"], group["eps"], group["weight_decay"])

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        if group["proj_type"] == "coord":
            # One gather / scatter per matrix: a projection is per tensor by nature.
            self._single_tensor_update(group, params, grads, states)
            return
        foreach_adamw_step_(params, grads, states, group["lr"], group["betas"], group["eps"], group["weight_decay"])
