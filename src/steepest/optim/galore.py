"""GaLore: AdamW on low-rank projections of matrix gradients."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, overload

import torch
from torch import Tensor

from steepest.optim._base import SCALAR_DTYPE, Capabilities, ParamGroup, StateSpec, SteepestOptimizer
from steepest.optim._functional import (
    Scalar,
    add_scaled_,
    addcmul_scaled_,
    bias_correction,
    increment_step,
    increment_steps,
    scalar_sqrt,
)
from steepest.optim._projectors import PROJ_TYPES, LowRankProjector, warn_nothing_projected
from steepest.optim._validation import POSITIVE, Boolean, Integer, OneOf, Optional, check_hyperparameters


class GaLoreAdamW(SteepestOptimizer):
    r"""GaLore-AdamW: Adam run on a low-rank projection of each matrix gradient.

    Paper: Zhao, Zhang, Chen, Wang, Anandkumar, Tian, "GaLore: Memory-Efficient LLM Training
    by Gradient Low-Rank Projection", ICML 2024, arXiv:2403.03507.

    Usage: parameters in a param group whose ``rank`` is set (an int; the constructor default
    ``None`` means no projection) are projected; all others get plain AdamW in the same
    optimizer. :func:`steepest.lowrank_param_groups` builds the groups the paper uses (the
    weight matrices of modules named ``*attn*`` / ``*mlp*`` projected: ``nn.Linear`` and Hugging
    Face ``Conv1D`` alike, never embeddings; see :func:`steepest.optim._projectors.matrix_weights`),
    and :func:`steepest.optimizer_params` projects every weight matrix but the output layer. An
    optimizer built with no projected group warns: it would be plain AdamW.

    Update rule for a projected matrix :math:`W \in \mathbb{R}^{m\times n}` with gradient
    :math:`G_t`, :math:`t \ge 1`, rank :math:`r`, refresh gap :math:`T` and scale
    :math:`\alpha` (see :mod:`steepest.optim._projectors` for the sides):

    .. math::

        &\text{if } (t-1) \bmod T = 0:\ P \leftarrow \text{top-}r \text{ singular vectors of } G_t \\
        R_t &= \mathrm{proj}_P(G_t) \qquad (m\times r \text{ or } r\times n) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) R_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) R_t^2 \\
        W_t' &= W_{t-1} - \eta \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
            \alpha\,\mathrm{back}_P\!\Big(\frac{m_t}{\sqrt{v_t} + \epsilon}\Big) \\
        W_t &= W_t' - \eta\lambda W_t'

    Plain parameters follow the same rule with :math:`R_t = G_t` and no projection.

    As in the official code (jiaweizzhao/GaLore, PyPI galore-torch 1.0): the moments are kept
    in the projected shape and are **not** reset when the subspace changes; :math:`\epsilon`
    is added to :math:`\sqrt{v_t}` with both bias corrections folded into the step size
    (Adam 2014's form); weight decay is decoupled and applied **after** the update, to the
    updated weights; :math:`\alpha` multiplies the whole projected update (the effective lr
    is :math:`\alpha\eta`). ``proj_type`` ``'std'`` reduces the smaller side of each matrix.
    Differences: the basis lives in the optimizer state as tensors (not a projector object),
    so ``state_dict`` round-trips; a float64 gradient is decomposed in float64 (the official
    code uses float32 for every dtype other than float32; bf16/fp16 are decomposed in float32
    here too); a non-finite gradient gives a NaN basis instead of an SVD error; a projected
    group with a non-matrix parameter or ``rank >= min(m, n)`` is refused at construction
    (the official 'std' and 'reverse_std' pick the wrong back-projection side there).
    The float32 op sequence is the official one, so float32 trajectories match galore-torch
    bitwise. That matters more than usual: the moments outlive a refresh, so a gradient change
    of one ulp that flips the sign of a singular vector at a refresh changes the run visibly.

    State per parameter: ``step`` (scalar). Projected: the basis ``proj_right``
    (:math:`r\times n`) or ``proj_left`` (:math:`m\times r`; both for ``'full'``), and
    ``exp_avg``, ``exp_avg_sq`` in the projected shape (:math:`m\times r`, :math:`r\times n`
    or :math:`r\times r`). Plain: ``exp_avg``, ``exp_avg_sq`` like the parameter.

    Args:
        params: parameters or param groups.
        lr: step size :math:`\eta`. Default 1e-3 (official code); the paper uses 0.01.
        betas: :math:`(\beta_1, \beta_2)`, default (0.9, 0.999) (official code).
        eps: :math:`\epsilon`, default 1e-6 (official code).
        weight_decay: decoupled decay :math:`\lambda`, applied after the update, default 0
            (official code).
        correct_bias: use the bias corrections, default True (official code).
        rank: :math:`r`, default None: no projection. Set it per group (paper: 128-512).
        update_proj_gap: :math:`T`, default 200 (official code, paper).
        scale: :math:`\alpha`, default 1.0 (official code; the paper uses 0.25).
        proj_type: ``'std'`` (default, official code), ``'reverse_std'``, ``'left'``,
            ``'right'`` or ``'full'``.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path for the moments (``None``: yes); the
            projections are per matrix either way.
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure. Projected parameters must be 2-D.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.zeros(3, 2))
        >>> b = torch.nn.Parameter(torch.zeros(2))
        >>> opt = steepest.GaLoreAdamW([{"params": [w], "rank": 1}, {"params": [b]}], lr=0.1)
        >>> w.grad = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
        >>> b.grad = torch.tensor([1.0, -1.0])
        >>> _ = opt.step()
        >>> w.detach()  # the rank-1 subspace of this gradient is the first column
        tensor([[-0.1000,  0.0000],
                [-0.1000,  0.0000],
                [ 0.0000,  0.0000]])
        >>> b.detach()  # plain AdamW
        tensor([-0.1000,  0.1000])
        >>> opt.state[w]["proj_right"].shape, opt.state[w]["exp_avg"].shape
        (torch.Size([1, 2]), torch.Size([3, 1]))
    """

    # Not elementwise: a projected matrix is updated through an SVD and matmuls (per matrix, in
    # both paths); the plain groups are elementwise and use foreach kernels.
    capabilities = Capabilities(elementwise=False, supports_fused=True)
    hyperparameter_rules = MappingProxyType(
        {
            "correct_bias": Boolean(),
            "rank": Optional(Integer(1)),
            "update_proj_gap": Integer(1),
            "scale": POSITIVE,
            "proj_type": OneOf(PROJ_TYPES),
        }
    )

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
        rank: int | None = None,
        update_proj_gap: int = 200,
        scale: float = 1.0,
        proj_type: str = "std",
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
            correct_bias=correct_bias,
            rank=rank,
            update_proj_gap=update_proj_gap,
            scale=scale,
            proj_type=proj_type,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        if all(group["rank"] is None for group in self.param_groups):
            warn_nothing_projected(
                type(self).__name__,
                "Give the weight matrices a group with a 'rank': steepest.lowrank_param_groups(model, rank=...) "
                f"or steepest.optimizer_params({self._registry_key!r}, model).",
            )

    #: The registry key named in the "nothing projected" warning.
    _registry_key = "galore_adamw"

    # -- groups and state ----------------------------------------------------------------

    def projector(self, group: ParamGroup) -> LowRankProjector | None:
        """The projector of ``group``, or None for a plain (unprojected) group."""
        if group["rank"] is None:
            return None
        return LowRankProjector(
            rank=group["rank"],
            proj_type=group["proj_type"],
            scale=group["scale"],
            update_proj_gap=group["update_proj_gap"],
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group; a projected one must hold matrices larger than its rank."""
        name = type(self).__name__
        overrides = {k: v for k, v in param_group.items() if k != "params"}
        check_hyperparameters(name, self._rules(), overrides)
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif not isinstance(params, set):  # torch rejects sets itself, with its own message
            params = list(params)
        param_group = {**param_group, "params": params}
        projector = self.projector({**self.defaults, **overrides})
        if projector is not None:
            for p in params:
                if isinstance(p, Tensor):
                    projector.check(name, p)
        super().add_param_group(param_group)

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``step``; the basis and the moments in the projected shape, or moments like ``param``."""
        shapes: StateSpec = {"step": ((), SCALAR_DTYPE)}
        projector = self.projector(group)
        if projector is None:
            moment_shape = tuple(param.shape)
        else:
            shape = tuple(param.shape)
            shapes.update({k: (s, param.dtype) for k, s in projector.basis_shapes(shape).items()})
            moment_shape = projector.projected_shape(shape)
        shapes["exp_avg"] = (moment_shape, param.dtype)
        shapes["exp_avg_sq"] = (moment_shape, param.dtype)
        return shapes

    @classmethod
    def describe_state(cls) -> str:
        """One line stating the state kept per parameter."""
        return (
            "step (scalar); projected matrices: basis proj_right (r x n) or proj_left (m x r), "
            "exp_avg and exp_avg_sq in the projected shape; plain: exp_avg, exp_avg_sq (like the parameter)"
        )

    # -- update --------------------------------------------------------------------------

    @overload
    def _step_size(self, group: ParamGroup, step: float) -> float: ...
    @overload
    def _step_size(self, group: ParamGroup, step: Scalar) -> Scalar: ...
    def _step_size(self, group: ParamGroup, step: Scalar) -> Scalar:
        lr, (beta1, beta2) = group["lr"], group["betas"]
        if not group["correct_bias"]:
            return lr
        return lr * scalar_sqrt(bias_correction(beta2, step)) / bias_correction(beta1, step)

    def fused_applies(self, group: ParamGroup) -> bool:
        """Only unprojected groups (``rank=None``) are fused."""
        return group["rank"] is None

    def sharding_refusal(self, group: ParamGroup) -> str | None:
        """Projected groups need whole matrices; unprojected groups (``rank=None``) take DTensors."""
        if group["rank"] is None:
            return None
        return "each projected gradient matrix whole for its SVD projector (a shard holds some rows)"

    def _projected_direction(
        self,
        projector: LowRankProjector,
        grad: Tensor,
        low_rank_grad: Tensor,
        normalized: Tensor,
        state: dict[str, Any],
        step: float,
    ) -> Tensor:
        """The full-shape update direction of a projected matrix (before ``-step_size``)."""
        return projector.project_back(normalized, state)

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        (beta1, beta2), eps = group["betas"], group["eps"]
        projector = self.projector(group)
        for param, grad, state in zip(params, grads, states, strict=True):
            step = increment_step(state["step"])
            low = grad if projector is None else projector.project(grad, state, int(step) - 1)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            add_scaled_(exp_avg.mul_(beta1), low, 1.0 - beta1)
            addcmul_scaled_(exp_avg_sq.mul_(beta2), low, low, 1.0 - beta2)
            denom = exp_avg_sq.sqrt().add_(eps)
            step_size = self._step_size(group, step)
            direction = exp_avg / denom
            if projector is not None:
                direction = self._projected_direction(projector, grad, low, direction, state, float(step))
            add_scaled_(param, direction, -step_size)
            wd = group["weight_decay"]
            if isinstance(wd, Tensor) or wd > 0.0:  # after the update, in the official code's form
                add_scaled_(param, param, -group["lr"] * wd)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        (beta1, beta2), eps = group["betas"], group["eps"]
        projector = self.projector(group)
        steps = increment_steps([s["step"] for s in states])
        if projector is None:
            lows = grads
        else:
            lows = [projector.project(g, s, int(t) - 1) for g, s, t in zip(grads, states, steps, strict=True)]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, lows, alpha=1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, lows, lows, value=1.0 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denom, eps)
        step_sizes = [self._step_size(group, t) for t in steps]
        directions = list(torch._foreach_div(exp_avgs, denom))
        if projector is not None:
            directions = [
                self._projected_direction(projector, grad, low, direction, state, step)
                for grad, low, direction, state, step in zip(grads, lows, directions, states, steps, strict=True)
            ]
        if all(size == step_sizes[0] for size in step_sizes):
            torch._foreach_add_(params, directions, alpha=-step_sizes[0])
        else:  # parameters at different steps (some skipped a step with no gradient)
            torch._foreach_mul_(directions, [-size for size in step_sizes])
            torch._foreach_add_(params, directions)
        if group["weight_decay"] > 0.0:  # after the update, in the official code's form
            torch._foreach_add_(params, params, alpha=-group["lr"] * group["weight_decay"])
