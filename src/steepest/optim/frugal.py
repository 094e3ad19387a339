"""FRUGAL: a state-full AdamW subspace plus a state-free signSGD remainder (coordinate, SVD and block variants)."""

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
    decay_weights_,
    foreach_adamw_step_,
    increment_step,
    update_moments_,
)
from steepest.optim._projectors import LowRankProjector, warn_nothing_projected
from steepest.optim._validation import NON_NEGATIVE, Boolean, Integer, Interval, OneOf, Rule


def _subspace_size(param: Tensor, group: ParamGroup) -> tuple[int, int]:
    """(size of the space the coordinates are drawn from, number drawn)."""
    choice = group["coord_choice"]
    space = param.numel() if choice == "randk" else int(param.shape[1] if choice == "columns" else param.shape[0])
    return space, int(space * group["density"])


#: ``none`` plain AdamW; ``coord`` coordinates; ``svd`` / ``random`` a low-rank subspace; ``block`` whole tensors.
PROJ_TYPES = ("none", "coord", "svd", "random", "block")
#: Which tensors of a ``block`` group are state-full after each refresh.
BLOCK_ORDERS = ("random", "ascending", "descending", "mirror")


def _lowrank_rank(shape: tuple[int, ...], density: float) -> int:
    """FRUGAL's rank: ``round(density * side)`` of the side the 'std' projection reduces (the smaller)."""
    return max(1, round(density * min(shape)))


def _num_active(group: ParamGroup) -> int:
    return round(len(group["params"]) * group["density"])


def active_blocks(group: ParamGroup, refresh: int) -> set[int]:
    """Positions (in ``group["params"]``) of the state-full tensors after refresh number ``refresh``.

    ``ascending`` walks a window of ``n = round(len * density)`` tensors forward from the first,
    ``descending`` backward from the last, ``mirror`` takes ``n / 2`` from each end walking inward,
    ``random`` draws ``n`` from a generator seeded with ``seed`` and ``refresh`` (the official code
    uses the global RNG). Computed from the refresh number alone, so no shared state is needed.
    """
    size, n = len(group["params"]), _num_active(group)
    order = group["block_order"]
    if n == 0 or size == 0:
        return set()
    if order == "random":
        gen = torch.Generator().manual_seed((group["seed"] * 1_000_003 + refresh * 7919) % (2**63))
        return {int(i) for i in torch.randperm(size, generator=gen)[:n]}
    if order == "ascending":
        start = refresh * n % size
        return {(start + j) % size for j in range(n)}
    if order == "descending":
        start = (size - 1 - refresh * n) % size
        return {(start - j) % size for j in range(n)}
    half = size // 2
    start = refresh * (n // 2) % half
    picked = [(start + j) % half for j in range(n // 2)]
    return set(picked) | {size - 1 - i for i in picked}


class FRUGAL(SteepestOptimizer):
    r"""FRUGAL: AdamW on a subspace (coordinates, low-rank, or whole tensors), signSGD on the rest.

    Paper: Zmushko, Beznosikov, Takáč, Horváth, "FRUGAL: Memory-Efficient Optimization by
    Reducing State Overhead for Scalable Training", ICML 2025, arXiv:2411.07837; official code
    read at the author's initial commit c7ebe4c (``CoordAdamW``, ``GaloreAdamW``, ``BlockAdamW``).

    The paper's main method is the blockwise one, ``proj_type="block"`` with
    ``block_order="descending"``: the official README says ``block_adamw`` "also can be launched
    with ``frugal``", and its C4 pre-training scripts run ``--optimizer frugal --block_order
    descending --density 0.25 --update_gap 200``. That is what
    ``steepest.optimizer_params("frugal", model)`` builds (the weight matrices but the output
    layer's in a ``"block"`` group, everything else plain AdamW, close to the official
    ``prepare_proj_params``, which takes the attention and MLP linear layers), and
    ``block_order`` defaults to ``"descending"`` here. The class default ``proj_type="none"``
    stays: a projection is opted into per param group (as GaLore's rank is), because a
    constructor-wide ``"block"`` would also put embeddings, norms and biases into the rotation,
    which the official code keeps on AdamW.

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

    ``proj_type="svd"`` (or ``"random"``) is the same rule on a rank-:math:`r` subspace from the
    shared :class:`~steepest.optim._projectors.LowRankProjector` ('std' side, :math:`r =
    \mathrm{round}(\text{density}\cdot\min(m, n))`): :math:`G_S = P^\top G` (or :math:`G P^\top`),
    scatter is the back-projection, the basis is the top singular vectors of the gradient at each
    refresh (or a seeded random orthonormal basis), and :math:`R = G - PP^\top G`.

    ``proj_type="block"`` works on whole tensors: at each refresh
    :math:`\mathrm{round}(\text{density}\cdot L)` of the group's :math:`L` tensors become
    state-full (chosen by ``block_order``, see :func:`active_blocks`), with fresh AdamW state at
    :math:`\eta'`; the others drop their state and step by :math:`-\eta'\,\text{inactive\_lr\_scale}
    \cdot\mathrm{sign}(G)`. Every tensor's ``step`` restarts at each refresh (as the official code).

    Groups with ``proj_type="none"`` get the same AdamW on the whole tensor at ``lr``.

    Randomness: the draw uses a ``torch.Generator`` seeded from ``seed``, the parameter's
    position in its group and its total step count ``count``; the chosen ``indices`` are kept
    in the state, so a ``state_dict`` round trip continues identically.

    Differences from the official code: the refresh step is read per parameter (the official
    code reads the group's first parameter; they agree when every tensor has a gradient at
    every step); draws come from seeded generators, not torch's global RNG; the ``randperm``
    projection of the official GaLore projector is not offered; ``block_order`` defaults to the
    scripts' ``"descending"``, not the official class's ``"random"``.

    State: ``proj_type="none"``: ``exp_avg``, ``exp_avg_sq`` (like the parameter), ``step``.
    ``"coord"``: ``exp_avg``, ``exp_avg_sq`` of the projected shape ((m, k) for columns,
    (k, n) for rows, (k,) for randk), ``indices`` (int64, (k,)), ``step`` and ``count``.
    ``"svd"``/``"random"``: moments of the projected shape, the basis (``proj_left`` m x r or
    ``proj_right`` r x n), ``step`` and ``count``. ``"block"``: ``step`` and ``count``, plus full
    ``exp_avg`` and ``exp_avg_sq`` while the tensor is state-full.

    Args:
        params: parameters or param groups.
        lr: step size, default 1e-3 (official class).
        betas: default (0.9, 0.999) (official class).
        eps: default 1e-8 (official code; its docstring says 1e-6), form (B).
        weight_decay: decoupled, at the base lr, default 0.01 (official class and CLI).
        proj_type: ``"none"`` (plain AdamW, the default for a group that names none), ``"block"``
            (the paper's main method), ``"coord"``, ``"svd"`` or ``"random"``; set it per param
            group, as :func:`steepest.optimizer_params` does.
        density: the state-full fraction, default 0.25 (official class, README and pre-training
            scripts).
        update_gap: steps between draws, default 200 (official class; the README: "200 in all
            main experiments"; the pre-training scripts; the CLI's own default is 50).
        reset_statistics: zero the moments at each draw, default True (official class and scripts).
        inactive_update_rule: ``"sign_sgd"`` (default: official class, README and scripts),
            ``"sgd"`` or ``"no"``.
        inactive_lr_scale: default 1.0 (official class; the README: 1.0 for pre-training, 0.1 for
            fine-tuning).
        proj_params_lr_scale: default 1.0 (official; the README: "1.0 in all main experiments").
        coord_choice: ``"columns"`` (default, the official ``CoordOptimizer``'s; its README names
            ``"randk"``), ``"rows"`` or ``"randk"``.
        block_order: ``"descending"`` (default: the official pre-training scripts, the paper's
            main runs), ``"random"`` (the official ``BlockOptimizer`` class default, the order
            before this release), ``"ascending"`` or ``"mirror"``.
        seed: seed of the draws, default 0.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path for unprojected groups (``None``: yes).
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure. ``columns``/``rows``, ``svd`` and ``random`` need
    2-D parameters (and a rank below both sides); ``mirror`` needs an even number of state-full
    tensors.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.zeros(2, 2))
        >>> opt = steepest.FRUGAL([{"params": [w], "proj_type": "coord", "density": 0.5}], lr=0.1)
        >>> w.grad = torch.tensor([[1.0, -1.0], [2.0, 3.0]])
        >>> _ = opt.step()
        >>> steepest.state_bytes(opt)  # two (2, 1) moments, one int64 index, step and count
        32
    """

    capabilities: ClassVar[Capabilities] = Capabilities(elementwise=False, supports_fused=True)
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = MappingProxyType(
        {
            "proj_type": OneOf(PROJ_TYPES),
            "block_order": OneOf(BLOCK_ORDERS),
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
        block_order: str = "descending",
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
            proj_type=proj_type,
            density=density,
            update_gap=update_gap,
            reset_statistics=reset_statistics,
            inactive_update_rule=inactive_update_rule,
            inactive_lr_scale=inactive_lr_scale,
            proj_params_lr_scale=proj_params_lr_scale,
            coord_choice=coord_choice,
            block_order=block_order,
            seed=seed,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        if all(group["proj_type"] == "none" for group in self.param_groups):
            warn_nothing_projected(
                "FRUGAL",
                "Give the weight matrices a group with a proj_type other than 'none': "
                "steepest.optimizer_params('frugal', model) (proj_type='block', the paper's method), "
                "or a proj_type for every group.",
            )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, checking each projection gets parameters it can project."""
        group = {**self.defaults, **param_group}
        proj, choice = group["proj_type"], group["coord_choice"]
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        tensors = [p for p in params if isinstance(p, Tensor)]
        for p in tensors:
            if proj == "coord" and choice != "randk" and p.ndim != 2:
                raise ValueError(
                    f"FRUGAL: coord_choice={choice!r} needs 2-D parameters, got shape {tuple(p.shape)} "
                    "(use coord_choice='randk' or proj_type='none')"
                )
            if proj in ("svd", "random"):
                if p.ndim != 2:
                    raise ValueError(
                        f"FRUGAL: proj_type={proj!r} needs 2-D parameters, got shape {tuple(p.shape)}; "
                        "put it in a group with proj_type='none' or 'block'"
                    )
                rank = _lowrank_rank(tuple(p.shape), group["density"])
                if rank >= min(p.shape):
                    raise ValueError(
                        f"FRUGAL: density={group['density']} gives rank {rank} >= min(m, n) = {min(p.shape)} for "
                        f"shape {tuple(p.shape)}: the projection would be full rank; lower the density"
                    )
        if proj == "block" and group["block_order"] == "mirror" and round(len(tensors) * group["density"]) % 2:
            raise ValueError(
                f"FRUGAL: block_order='mirror' needs an even number of state-full tensors, got "
                f"round({len(tensors)} * {group['density']}) = {round(len(tensors) * group['density'])}"
            )
        super().add_param_group({**param_group, "params": params})

    def _projector(self, param: Tensor, group: ParamGroup) -> LowRankProjector:
        return LowRankProjector(
            rank=_lowrank_rank(tuple(param.shape), group["density"]),
            proj_type="std",
            update_proj_gap=group["update_gap"],
            method=group["proj_type"],
            seed=group["seed"],
        )

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """Full-shape Adam state, projected moments plus indices or basis, or a block's current state."""
        scalar = ((), SCALAR_DTYPE)
        proj = group["proj_type"]
        if proj == "none":
            like = (tuple(param.shape), param.dtype)
            return {"exp_avg": like, "exp_avg_sq": like, "step": scalar}
        if proj == "block":
            state = self.state.get(param, {})
            count = int(state["count"]) if "count" in state else 0
            position = next(i for i, q in enumerate(group["params"]) if q is param)
            active = position in active_blocks(group, max(count - 1, 0) // group["update_gap"])
            return self._block_shapes(param, active)
        if proj in ("svd", "random"):
            projector = self._projector(param, group)
            shape = tuple(param.shape)
            moment = (projector.projected_shape(shape), param.dtype)
            bases = {k: (s, param.dtype) for k, s in projector.basis_shapes(shape).items()}
            return {"exp_avg": moment, "exp_avg_sq": moment, **bases, "step": scalar, "count": scalar}
        _, k = _subspace_size(param, group)
        choice = group["coord_choice"]
        if choice == "columns":
            shape_: tuple[int, ...] = (int(param.shape[0]), k)
        elif choice == "rows":
            shape_ = (k, int(param.shape[1]))
        else:
            shape_ = (k,)
        return {
            "exp_avg": (shape_, param.dtype),
            "exp_avg_sq": (shape_, param.dtype),
            "indices": ((k,), torch.int64),
            "step": scalar,
            "count": scalar,
        }

    @staticmethod
    def _block_shapes(param: Tensor, active: bool) -> StateSpec:
        scalar = ((), SCALAR_DTYPE)
        shapes: dict[str, Any] = {"step": scalar, "count": scalar}
        if active:
            like = (tuple(param.shape), param.dtype)
            shapes.update(exp_avg=like, exp_avg_sq=like)
        return shapes

    def saved_state_shapes(self, param: Tensor, group: ParamGroup, entry: Mapping[str, Any]) -> StateSpec:
        """A saved block tensor holds moments exactly when it was state-full when saved."""
        if group["proj_type"] == "block":
            return self._block_shapes(param, "exp_avg" in entry)
        return self.state_shapes(param, group)

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

    def _lowrank_update(self, group: ParamGroup, param: Tensor, grad: Tensor, state: dict[str, Any]) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        projector = self._projector(param, group)
        if int(state["step"].item()) % group["update_gap"] == 0:
            # The random basis is seeded by the total step count, so successive draws differ.
            projector.refresh_(grad, state, int(state["count"].item()))
            if group["reset_statistics"]:
                state["exp_avg"].zero_()
                state["exp_avg_sq"].zero_()
                state["step"].zero_()
        decay_weights_(param, lr, group["weight_decay"])
        step = increment_step(state["step"])
        state["count"].add_(1.0)
        low = projector.apply(grad, state)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        update_moments_(exp_avg, exp_avg_sq, low, beta1, beta2)
        scaled_lr = lr * group["proj_params_lr_scale"]
        denom = (exp_avg_sq.sqrt() / bias_correction(beta2, step) ** 0.5).add_(eps)
        update = projector.project_back(exp_avg / denom, state)
        rule = group["inactive_update_rule"]
        if rule != "no":
            residual = grad - projector.project_back(low, state)
            inactive = residual.sign() if rule == "sign_sgd" else residual
            param.add_(inactive, alpha=-scaled_lr * group["inactive_lr_scale"])
        param.add_(update, alpha=-scaled_lr / bias_correction(beta1, step))

    def _block_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, gap = group["lr"], group["update_gap"]
        scaled_lr = lr * group["proj_params_lr_scale"]
        positions = {id(p): i for i, p in enumerate(group["params"])}
        active_sets: dict[int, set[int]] = {}
        for param, grad, state in zip(params, grads, states, strict=True):
            count = int(state["count"].item())
            if count % gap == 0:
                refresh = count // gap
                if refresh not in active_sets:
                    active_sets[refresh] = active_blocks(group, refresh)
                state["step"].zero_()
                if positions[id(param)] in active_sets[refresh]:
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                else:
                    state.pop("exp_avg", None)
                    state.pop("exp_avg_sq", None)
            decay_weights_(param, lr, group["weight_decay"])
            state["count"].add_(1.0)
            if "exp_avg" in state:
                adamw_step_(param, grad, state, scaled_lr, group["betas"], group["eps"], 0.0)
                continue
            state["step"].add_(1.0)
            rule = group["inactive_update_rule"]
            if rule != "no":
                param.add_(grad.sign() if rule == "sign_sgd" else grad, alpha=-scaled_lr * group["inactive_lr_scale"])

    def fused_applies(self, group: ParamGroup) -> bool:
        """Only unprojected groups (``proj_type="none"``, plain AdamW) are fused."""
        return group["proj_type"] == "none"

    def sharding_refusal(self, group: ParamGroup) -> str | None:
        """Projected groups need whole matrices; unprojected groups (``proj_type="none"``) take DTensors."""
        if group["proj_type"] == "none":
            return None
        return "each projected matrix whole to choose its state-full subspace (a shard holds some rows)"

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        proj = group["proj_type"]
        if proj == "block":
            self._block_update(group, params, grads, states)
            return
        if proj != "none":
            update = self._coord_update if proj == "coord" else self._lowrank_update
            for param, grad, state in zip(params, grads, states, strict=True):
                update(group, param, grad, state)
            return
        for param, grad, state in zip(params, grads, states, strict=True):
            adamw_step_(param, grad, state, group["lr"], group["betas"], group["eps"], group["weight_decay"])

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        if group["proj_type"] != "none":
            # One gather / scatter, SVD or activation per tensor: a projection is per tensor by nature.
            self._single_tensor_update(group, params, grads, states)
            return
        foreach_adamw_step_(params, grads, states, group["lr"], group["betas"], group["eps"], group["weight_decay"])
