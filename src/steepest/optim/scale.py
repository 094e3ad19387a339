"""SCALE: column-normalized SGD with last-layer momentum, AdamW for 1-D parameters."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from steepest.optim import _base
from steepest.optim._base import SCALAR_DTYPE, Capabilities, ParamGroup, StateSpec, SteepestOptimizer
from steepest.optim._functional import (
    add_scaled_,
    addcdiv_scaled_,
    bias_correction,
    decay_weights_,
    foreach_decay_weights_,
    foreach_update_moments_,
    increment_step,
    increment_steps,
    lerp_,
    update_moments_,
)
from steepest.optim._validation import NON_NEGATIVE, OneOf, Rule

#: Floor on the per-column RMS (official code).
_RMS_FLOOR = 1e-8
ROLES = ("auto", "matrix", "last_layer", "vector")


def _resolve_role(param: Tensor, group: ParamGroup) -> str:
    role = str(group["role"])
    if role == "auto":
        return "vector" if param.ndim < 2 else "matrix"
    return role


def _column_normalized(grad: Tensor, norm_dim: int) -> Tensor:
    """``G / max(sqrt(mean(G**2, dim=norm_dim)), 1e-8)`` on ``G`` viewed as ``(size0, -1)``, shaped back."""
    if grad.numel() == 0:
        return torch.zeros_like(grad)
    matrix = grad.reshape(grad.shape[0], grad.numel() // grad.shape[0])
    rms = matrix.square().mean(dim=norm_dim, keepdim=True).sqrt_().clamp_(min=_RMS_FLOOR)
    return (matrix / rms).reshape(grad.shape)


def _column_normalized_step_(param: Tensor, source: Tensor, norm_dim: int, lr: float, wd: float) -> None:
    """``param <- param (1 - lr wd) - lr * column_normalized(source)`` with no parameter-sized temporary.

    The RMS comes from a norm (one read of ``source``), and the division happens inside ``addcdiv_``;
    a non-contiguous parameter (which cannot be viewed as the matrix) takes the plain form. Same
    values as :func:`_column_normalized` up to rounding: in float64 to 1e-12 relative; in bfloat16
    an entry can differ from the loop's by one unit in the last place (the norm accumulates in
    float32 where the loop squares in bfloat16; seen: 0.031 at magnitude 4 after 5 steps).
    """
    matrix = source.reshape(source.shape[0], source.numel() // source.shape[0])
    rms = torch.linalg.vector_norm(matrix, dim=norm_dim, keepdim=True)
    rms.div_(math.sqrt(matrix.shape[norm_dim])).clamp_(min=_RMS_FLOOR)
    decay_weights_(param, lr, wd)
    if param.is_contiguous():
        param.view(matrix.shape).addcdiv_(matrix, rms, value=-lr)
    else:
        param.add_((matrix / rms).reshape(param.shape), alpha=-lr)


class SCALE(SteepestOptimizer):
    r"""SCALE: column-normalized SGD, momentum on the last layer only, AdamW for vectors.

    Paper: Glentis, Li, Han, Hong, "A Minimalist Optimizer Design for LLM Pretraining", 2025,
    arXiv:2506.16659; official code OptimAI-Lab/Minimalist_LLM_Pretraining@f5bd4e7
    (``mem_eff_pt/pt_scale/scale_optimizer.py``).

    Each parameter has a *role*, taken from its param group's ``role`` (build the groups with
    :func:`scale_param_groups`). With gradient :math:`G` viewed as a matrix
    ``(size0, -1)``:

    .. math::

        \text{last\_layer:}\quad m_t &= \beta m_{t-1} + (1-\beta) G_t,\quad G_t \leftarrow m_t \\
        \text{matrix, last\_layer:}\quad U_t &= G_t / \max\big(\sqrt{\mathrm{mean}_{d}(G_t^2)}, 10^{-8}\big) \\
        \theta_t &= \theta_{t-1}(1 - \eta\lambda) - \eta U_t

    where the mean runs over ``norm_dim`` :math:`d` (1 by default: every output neuron's row of
    a ``Linear`` weight gets RMS 1; 0 for embeddings: every feature column over the
    vocabulary). ``vector`` parameters take AdamW (eps outside the square root of the
    uncorrected :math:`v`) with :math:`\eta_{1d} = \rho\,\eta_t`:

    .. math::

        \theta_t = \theta_{t-1}(1 - \eta_{1d}\lambda)
            - \eta_{1d}\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\frac{m_t}{\sqrt{v_t} + \epsilon}

    Schedule coupling: the official code uses :math:`\eta_{1d} = \text{adam\_lr}\cdot\eta_t/\eta_0`.
    Here the ratio :math:`\rho = \text{adam\_lr}/\eta_0` is stored per group as
    ``adam_lr_ratio``, so any scheduler that scales ``lr`` scales both, identically.

    Differences from the official code:

    * the split is explicit (param-group roles) instead of matching LLaMA module names; the
      default ``role="auto"`` gives 1-D (and 0-D) parameters to AdamW and every other
      parameter to the momentum-free matrix rule. The official code gives momentum to
      *every* non-attention/MLP/embedding matrix ("secondary"); in LLaMA that is only
      ``lm_head``, which :func:`scale_param_groups` names explicitly.
    * parameters with more than 2 dimensions are normalized as ``(size0, -1)`` matrices and the
      update is reshaped back to the parameter's shape (the official code fails to broadcast).
    * the decoupled decay of vectors is applied before the Adam step (same as the official
      formula :math:`p(1-\eta_{1d}\lambda) - \eta_{1d} u`).

    State per parameter: ``momentum`` (like the parameter) for ``last_layer``; ``exp_avg``,
    ``exp_avg_sq`` (like the parameter) and ``step`` (scalar) for ``vector``; nothing for
    ``matrix``. The paper's memory claim (only the last layer's momentum and the 1-D Adam
    states) is what :func:`steepest.state_bytes` reports.

    Args:
        params: parameters or param groups (see :func:`scale_param_groups`).
        lr: step size :math:`\eta`. Default 1e-4 (official constructor); the paper's scripts
            use 1e-3 for 60M-350M models, 2e-4 (1B) and 1e-4 (7B).
        momentum: :math:`\beta` of the last-layer momentum, default 0.9 (official code, paper).
        weight_decay: decoupled decay :math:`\lambda` for every role, default 0 (official code).
        betas: AdamW betas for vectors, default (0.9, 0.999) (official code).
        eps: AdamW epsilon for vectors, default 1e-8 (official code).
        adam_lr_ratio: :math:`\rho`, the vector lr over ``lr``. Default 1.0 (official
            ``adam_lr=None`` means ``lr``). The 60M-350M scripts run 2e-2 / 1e-3 = 20, the 1B and
            7B ones 1e-3/2e-4 = 5 and 1e-3/1e-4 = 10.
        role: ``"auto"``, ``"matrix"``, ``"last_layer"`` or ``"vector"``, normally set per group.
            ``matrix`` and ``last_layer`` need parameters with at least 2 dimensions.
        norm_dim: the dimension the RMS is taken over, 1 (default) or 0 (embeddings).
        maximize: ascend the objective instead.
        foreach: use the batched path (``torch._foreach_*`` for vectors, one stacked
            normalization per distinct matrix shape); ``None``: yes.
        fused: compile the per-tensor update over each device and dtype bucket
            (:mod:`steepest.optim._fused`; ``None``, the default, means not fused, as in torch).

    Requirements: gradients only; no closure.

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.zeros(2, 2))
        >>> opt = steepest.SCALE([w], lr=0.1)
        >>> w.grad = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
        >>> _ = opt.step()
        >>> w.detach()
        tensor([[-0.0849, -0.1131],
                [ 0.0000, -0.1414]])
    """

    capabilities: ClassVar[Capabilities] = Capabilities(elementwise=False, supports_fused=True)
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = MappingProxyType(
        {"adam_lr_ratio": NON_NEGATIVE, "role": OneOf(ROLES), "norm_dim": OneOf((0, 1))}
    )

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        adam_lr_ratio: float = 1.0,
        role: str = "auto",
        norm_dim: int = 1,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            betas=betas,
            eps=eps,
            adam_lr_ratio=adam_lr_ratio,
            role=role,
            norm_dim=norm_dim,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, checking that ``matrix`` / ``last_layer`` parameters have 2+ dimensions."""
        role = param_group.get("role", self.defaults["role"])
        params = param_group["params"]
        for p in [params] if isinstance(params, Tensor) else list(params):
            if role in ("matrix", "last_layer") and isinstance(p, Tensor) and p.ndim < 2:
                raise ValueError(
                    f"SCALE: role={role!r} needs parameters with at least 2 dimensions, "
                    f"got shape {tuple(p.shape)} (use role='vector' or 'auto')"
                )
        if not isinstance(params, Tensor):
            param_group = {**param_group, "params": list(params)}
        super().add_param_group(param_group)

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``momentum`` for the last layer; Adam ``exp_avg``, ``exp_avg_sq``, ``step`` for vectors."""
        role = _resolve_role(param, group)
        like = (tuple(param.shape), param.dtype)
        if role == "last_layer":
            return {"momentum": like}
        if role == "vector":
            return {"exp_avg": like, "exp_avg_sq": like, "step": ((), SCALAR_DTYPE)}
        return {}

    @classmethod
    def describe_state(cls) -> str:
        """One line stating the state kept per parameter."""
        return (
            "momentum (like the parameter) for the last layer; exp_avg, exp_avg_sq (like the parameter) "
            "and step (scalar) for 1-D parameters; none for other matrices"
        )

    def _single_tensor_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, wd, beta = group["lr"], group["weight_decay"], group["momentum"]
        beta1, beta2 = group["betas"]
        for param, grad, state in zip(params, grads, states, strict=True):
            role = _resolve_role(param, group)
            if role == "vector":
                lr1d = group["adam_lr_ratio"] * lr
                step = increment_step(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                update_moments_(exp_avg, exp_avg_sq, grad, beta1, beta2)
                step_size = lr1d * bias_correction(beta2, step) ** 0.5 / bias_correction(beta1, step)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                decay_weights_(param, lr1d, wd)
                addcdiv_scaled_(param, exp_avg, denom, -step_size)
                continue
            if role == "last_layer":
                lerp_(state["momentum"], grad, 1.0 - beta)
                grad = state["momentum"]
            update = _column_normalized(grad, group["norm_dim"])
            decay_weights_(param, lr, wd)
            add_scaled_(param, update, -lr)

    def _foreach_update(
        self, group: ParamGroup, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        lr, wd, beta = group["lr"], group["weight_decay"], group["momentum"]
        beta1, beta2 = group["betas"]
        roles = [_resolve_role(p, group) for p in params]
        vec = [i for i, r in enumerate(roles) if r == "vector"]
        if vec:
            lr1d = group["adam_lr_ratio"] * lr
            v_params = [params[i] for i in vec]
            v_grads = [grads[i] for i in vec]
            exp_avgs = [states[i]["exp_avg"] for i in vec]
            exp_avg_sqs = [states[i]["exp_avg_sq"] for i in vec]
            steps = increment_steps([states[i]["step"] for i in vec])
            foreach_update_moments_(exp_avgs, exp_avg_sqs, v_grads, beta1, beta2)
            step_sizes = [-lr1d * bias_correction(beta2, s) ** 0.5 / bias_correction(beta1, s) for s in steps]
            denoms = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_add_(denoms, group["eps"])
            foreach_decay_weights_(v_params, lr1d, wd)
            torch._foreach_addcdiv_(v_params, exp_avgs, denoms, step_sizes)
        last = [i for i, r in enumerate(roles) if r == "last_layer"]
        sources = list(grads)
        if last:
            momenta = [states[i]["momentum"] for i in last]
            torch._foreach_lerp_(momenta, [grads[i] for i in last], 1.0 - beta)
            for i, m in zip(last, momenta, strict=True):
                sources[i] = m
        # Column normalization, batched over parameters of one shape: a constant number of
        # calls per distinct shape, none per parameter.
        buckets: dict[tuple[int, ...], list[int]] = {}
        for i, r in enumerate(roles):
            if r != "vector" and 0 not in params[i].shape:
                buckets.setdefault(tuple(params[i].shape), []).append(i)
        norm_dim = group["norm_dim"]
        for shape, indices in buckets.items():
            if math.prod(shape) >= _base.FOREACH_STACK_MAX_NUMEL:  # no stacked copy, no temporaries
                for i in indices:
                    _column_normalized_step_(params[i], sources[i], norm_dim, lr, wd)
                continue
            stacked = torch.stack([sources[i] for i in indices])
            matrix = stacked.reshape(len(indices), shape[0], -1)
            rms = matrix.square().mean(dim=1 + norm_dim, keepdim=True).sqrt_().clamp_(min=_RMS_FLOOR)
            updates = list((matrix / rms).reshape(stacked.shape).unbind(0))
            b_params = [params[i] for i in indices]
            foreach_decay_weights_(b_params, lr, wd)
            torch._foreach_add_(b_params, updates, alpha=-lr)


def scale_param_groups(
    model: nn.Module, last_layer: str = "lm_head", adam_lr_ratio: float | None = None
) -> list[dict[str, Any]]:
    """SCALE's param groups for ``model``.

    * the parameter(s) of the module (or parameter) named ``last_layer`` -> ``role="last_layer"``
      (momentum); only its parameters with 2+ dimensions, its bias (if any) goes to the vectors;
    * weights of ``nn.Embedding`` modules -> ``role="matrix", norm_dim=0`` (the official code's
      ``embed_tokens`` case);
    * every other parameter with 2+ dimensions -> ``role="matrix"``;
    * parameters with fewer than 2 dimensions -> ``role="vector"`` (AdamW), with
      ``adam_lr_ratio`` set on that group when given.

    Empty groups are left out. Raises ``ValueError`` if ``last_layer`` names no module or
    parameter with trainable 2-D+ weights, which is also the case when its weight is tied to
    an embedding (the official code then has no momentum anywhere; name no last layer
    differently, e.g. build the groups by hand).
    """
    embedding_weights = {
        id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and m.weight.requires_grad
    }
    matrix: list[Tensor] = []
    embed: list[Tensor] = []
    last: list[Tensor] = []
    vector: list[Tensor] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if p.ndim >= 2 and (name == last_layer or owner == last_layer):
            last.append(p)
        elif p.ndim < 2:
            vector.append(p)
        elif id(p) in embedding_weights:
            embed.append(p)
        else:
            matrix.append(p)
    if not last:
        raise ValueError(
            f"scale_param_groups: no trainable parameter with 2+ dimensions named {last_layer!r} "
            "(is the last layer tied to the embedding?)"
        )
    vector_group: dict[str, Any] = {"params": vector, "role": "vector"}
    if adam_lr_ratio is not None:
        vector_group["adam_lr_ratio"] = adam_lr_ratio
    groups: list[dict[str, Any]] = [
        {"params": matrix, "role": "matrix"},
        {"params": embed, "role": "matrix", "norm_dim": 0},
        {"params": last, "role": "last_layer"},
        vector_group,
    ]
    return [g for g in groups if g["params"]]
