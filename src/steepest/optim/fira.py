"""Fira: GaLore plus a norm-scaled full-rank residual."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from steepest.optim._base import ParamGroup, StateSpec
from steepest.optim._projectors import LEFT_KEY, RIGHT_KEY, LowRankProjector
from steepest.optim._validation import POSITIVE, Boolean, Integer, OneOf, Optional
from steepest.optim.galore import GaLoreAdamW

#: Fira's norm-growth limiter threshold (hard-coded in the official code).
GAMMA = 1.01
#: The guard added to the denominators of the scaling factor and the limiter (official code).
_TINY = 1e-8


class Fira(GaLoreAdamW):
    r"""Fira: GaLore-AdamW plus the norm-scaled residual of the gradient outside the subspace.

    Paper: Chen, Zhang, Li, Zhang, Zheng, Chen, "Fira: Can We Achieve Full-rank Training of
    LLMs Under Low-rank Constraint?", 2024, arXiv:2410.01623.

    Usage as :class:`GaLoreAdamW`: parameters in a param group whose ``rank`` is set are
    projected, all others get plain AdamW (see :func:`steepest.lowrank_param_groups`: weight
    matrices of ``nn.Linear`` and Hugging Face ``Conv1D`` alike, never embeddings). An optimizer
    built with no projected group warns: it would be plain AdamW.

    Update rule for a projected matrix (:math:`R_t`, :math:`m_t`, :math:`v_t`, the subspace
    refresh and :math:`\mathrm{back}` as in :class:`GaLoreAdamW`; :math:`N_t = m_t /
    (\sqrt{v_t} + \epsilon)`; :math:`\gamma = 1.01`):

    .. math::

        \phi_t &= \frac{\|N_t\|}{\|R_t\| + 10^{-8}}
            \quad\text{per row (right projection) or per column (left projection)} \\
        S_t &= \big(G_t - \alpha\,\mathrm{back}(R_t)\big)\,\phi_t \\
        \rho_t &= \max\!\Big(\frac{\|S_t\|}{s_{t-1} + 10^{-8}}, \gamma\Big) / \gamma,
            \quad S_t \leftarrow S_t / \rho_t, \quad s_t = \|S_t\| \quad (t \ge 2;\ s_1 = \|S_1\|) \\
        W_t' &= W_{t-1} - \eta \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
            \big(\alpha\,\mathrm{back}(N_t) + S_t\big), \qquad W_t = W_t' - \eta\lambda W_t'

    :math:`\phi_t` is taken along the index the projection keeps: one factor per row of an
    :math:`m\times r` projection, one per column of an :math:`r\times n` one. Plain
    parameters get AdamW exactly as in :class:`GaLoreAdamW`.

    As in the official code (xichen-fy/Fira, PyPI fira 1.0.2): the residual is
    :math:`G - \alpha\,\mathrm{back}(R)`, so with :math:`\alpha \ne 1` it still holds
    :math:`(1-\alpha)` of the in-subspace gradient (the paper writes :math:`G - PR`); the
    limiter is :math:`\gamma = 1.01` with its state the norm of the previous limited residual;
    eps form, bias corrections and weight decay (after the update) are GaLore's. Differences:
    the official group key ``alpha`` is called ``scale`` here, as in GaLore (a group with an
    ``alpha`` key is refused rather than silently ignored); ``proj_type='full'`` is refused
    (the official per-row factor does not broadcast to an :math:`m\times n` matrix there and
    the step fails); the basis and the limiter state are tensors in the optimizer state; the
    SVD precision and construction checks are those of :class:`GaLoreAdamW`.

    State per parameter: as :class:`GaLoreAdamW`, plus ``residual_norm`` (scalar,
    :math:`s_t`, float32 or the parameter's wider dtype) for projected matrices.

    Args:
        params: parameters or param groups.
        lr: step size :math:`\eta`. Default 1e-3 (official code); the paper's scripts use 0.01.
        betas: :math:`(\beta_1, \beta_2)`, default (0.9, 0.999) (official code).
        eps: :math:`\epsilon`, default 1e-6 (official code).
        weight_decay: decoupled decay :math:`\lambda`, applied after the update, default 0.
        correct_bias: use the bias corrections, default True (official code).
        rank: :math:`r`, default None: no projection. Set it per group (paper: 128-512).
        update_proj_gap: :math:`T`, default 200 (official code, paper scripts).
        scale: :math:`\alpha` (the official ``alpha``), default 1.0 (official code; the paper
            scripts use 0.25 up to 350M parameters, 0.0625 above).
        proj_type: ``'std'`` (default), ``'reverse_std'``, ``'left'`` or ``'right'``.
        maximize: ascend the objective instead.
        foreach: use the ``torch._foreach_*`` path for the moments (``None``: yes).
        fused: compile the update of unprojected groups over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure. Projected parameters must be 2-D.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.zeros(3, 2))
        >>> opt = steepest.Fira([{"params": [w], "rank": 1}], lr=0.1)
        >>> w.grad = torch.tensor([[2.0, 1.0], [1.0, 2.0], [0.0, 3.0]])
        >>> _ = opt.step()  # GaLore would move every row along the same rank-1 direction
        >>> w.detach().round(decimals=4) + 0.0  # (+ 0.0: an SVD rounding of -4e-9 prints as 0)
        tensor([[-0.1215, -0.0608],
                [-0.0449, -0.0899],
                [ 0.0000, -0.1070]])
    """

    _registry_key = "fira"
    hyperparameter_rules = MappingProxyType(
        {
            "correct_bias": Boolean(),
            "rank": Optional(Integer(1)),
            "update_proj_gap": Integer(1),
            "scale": POSITIVE,
            "proj_type": OneOf(("std", "reverse_std", "left", "right")),
        }
    )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group (the official key ``alpha`` is refused: it is ``scale`` here)."""
        if "alpha" in param_group:
            raise ValueError("Fira: the official group key 'alpha' is called 'scale' here")
        super().add_param_group(param_group)

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """GaLore's state, plus the scalar ``residual_norm`` for projected matrices."""
        shapes = super().state_shapes(param, group)
        if group["rank"] is not None:
            shapes["residual_norm"] = ((), torch.promote_types(param.dtype, torch.float32))
        return shapes

    @classmethod
    def describe_state(cls) -> str:
        """One line stating the state kept per parameter."""
        return super().describe_state() + "; projected matrices also residual_norm (scalar)"

    def _projected_direction(
        self,
        projector: LowRankProjector,
        grad: Tensor,
        low_rank_grad: Tensor,
        normalized: Tensor,
        state: dict[str, Any],
        step: float,
    ) -> Tensor:
        subspace = projector.project_back(low_rank_grad, state)
        # One factor per row of an m x r projection (right basis), per column of an r x n one.
        per_row = RIGHT_KEY in state and LEFT_KEY not in state
        dim = 1 if per_row else 0
        factor = torch.linalg.vector_norm(normalized, dim=dim) / (
            torch.linalg.vector_norm(low_rank_grad, dim=dim) + _TINY
        )
        if per_row:
            factor = factor.unsqueeze(1)
        residual = (grad - subspace) * factor
        norm = torch.linalg.vector_norm(residual)
        if step == 1:
            state["residual_norm"].copy_(norm)
        else:
            limiter = torch.clamp(norm / (state["residual_norm"] + _TINY), min=GAMMA) / GAMMA
            residual = residual / limiter
            state["residual_norm"].copy_(norm / limiter)
        return projector.project_back(normalized, state) + residual
