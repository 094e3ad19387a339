"""Small kernels shared by the optimizers, each in a per-tensor and a foreach form.

The per-tensor forms are what the reference paths read like; the foreach forms take lists
of tensors of one device and dtype. Scalars that depend on a step counter (bias corrections)
are computed once per bucket in double precision on the host, as torch's own optimizers do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def increment_step(step: Tensor) -> float:
    """Add one to a 0-dim step counter in place and return its new value."""
    step.add_(1.0)
    return float(step.item())


def increment_steps(steps: Sequence[Tensor]) -> list[float]:
    """Add one to each 0-dim step counter in place; return the new values (one host sync)."""
    steps = list(steps)
    torch._foreach_add_(steps, 1.0)
    values: list[float] = torch.stack(steps).tolist()
    return values


def bias_correction(beta: float, step: float) -> float:
    """``1 - beta**step``: the Adam bias correction of an EMA with decay ``beta``."""
    return 1.0 - beta**step


def decay_weights_(param: Tensor, lr: float, weight_decay: float) -> None:
    """Decoupled weight decay in place: ``p <- p * (1 - lr * weight_decay)``."""
    if weight_decay != 0.0:
        param.mul_(1.0 - lr * weight_decay)


def foreach_decay_weights_(params: list[Tensor], lr: float, weight_decay: float) -> None:
    """Foreach form of :func:`decay_weights_`."""
    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)


def trust_ratio(weight_norm: Tensor, update_norm: Tensor, numerator_scale: float = 1.0) -> Tensor:
    """``scale * ||w|| / ||u||``, or 1 where either norm is zero (layer-wise adaptation).

    Works elementwise on stacked norms too, so foreach paths compute all ratios at once.
    """
    ratio = numerator_scale * weight_norm / update_norm
    usable = (weight_norm > 0) & (update_norm > 0)
    return torch.where(usable, ratio, torch.ones_like(ratio))


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    """The l2 norm of all ``tensors`` taken together, as a 0-dim float32-or-wider tensor."""
    if not tensors:
        return torch.zeros(())
    norms = torch._foreach_norm(list(tensors))
    dtype = torch.promote_types(norms[0].dtype, torch.float32)
    return torch.linalg.vector_norm(torch.stack([n.to(dtype) for n in norms]))
