"""Small kernels shared by the optimizers, each in a per-tensor and a foreach form.

The per-tensor forms are what the reference paths read like; the foreach forms take lists
of tensors of one device and dtype. Scalars that depend on a step counter (bias corrections)
are computed once per bucket in double precision on the host, as torch's own optimizers do.

Per-tensor forms take :data:`Scalar` hyperparameters: a float in the eager per-tensor path, a
0-dim tensor when the fused path compiles that same code (:mod:`steepest.optim._fused`). The
``*_scaled_`` helpers below pick the op form each case needs (``alpha=``/``value=`` take only
numbers), so an update written with them serves both paths.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import overload

import torch
from torch import Tensor

#: A hyperparameter or derived scalar: a float (eager) or a 0-dim tensor (compiled fused path).
Scalar = float | Tensor


@functools.cache
def _dtensor_class() -> type | None:
    if not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def is_dtensor(tensor: object) -> bool:
    """Whether ``tensor`` is a ``torch.distributed.tensor.DTensor`` (an FSDP2 parameter or its state)."""
    cls = _dtensor_class()
    return cls is not None and isinstance(tensor, cls)


def unevenly_sharded(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a DTensor sharded along a dimension its mesh size does not divide.

    DTensor cannot flatten or regroup such a tensor (torch 2.13 raises "Cannot flatten unevenly
    sharded tensor"), so updates that view a parameter as blocks need even shards.
    """
    if not is_dtensor(tensor):
        return False
    from torch.distributed.tensor import Shard

    mesh = tensor.device_mesh  # type: ignore[attr-defined]
    return any(
        isinstance(placement, Shard) and tensor.shape[placement.dim] % mesh.size(mesh_dim) != 0
        for mesh_dim, placement in enumerate(tensor.placements)  # type: ignore[attr-defined]
    )


def copy_all_(targets: Sequence[Tensor], sources: Sequence[Tensor]) -> None:
    """``targets[i].copy_(sources[i])`` for every i: one ``torch._foreach_copy_`` for plain tensors.

    DTensors (FSDP2) take per-tensor copies: torch 2.13 has no sharding rule for ``_foreach_copy_``.
    A replicated DTensor source into a plain target is gathered with ``full_tensor()`` first.
    """
    if not any(is_dtensor(t) for t in (*targets, *sources)):
        torch._foreach_copy_(list(targets), list(sources))
        return
    for target, source in zip(targets, sources, strict=True):
        if is_dtensor(source) and not is_dtensor(target):
            source = source.full_tensor()  # type: ignore[attr-defined]
        target.copy_(source)


def increment_step(step: Tensor) -> Scalar:
    """Add one to a 0-dim step counter in place and return its new value.

    A float in eager mode; the counter tensor itself while compiling, where reading a value on
    the host would break the graph.
    """
    step.add_(1.0)
    if torch.compiler.is_compiling():
        return step
    return float(step.item())


#: Copies a per-block value is broadcast to and reduced over in :func:`materialized`: more than
#: inductor's ``unroll_reductions_threshold`` (8), below which a reduction is unrolled and inlined.
MATERIALIZE_WIDTH = 16


@overload
def materialized(scalar: float) -> float: ...
@overload
def materialized(scalar: Tensor) -> Tensor: ...
@overload
def materialized(scalar: Scalar) -> Scalar: ...
def materialized(scalar: Scalar) -> Scalar:
    """A tensor scalar or per-block value kept as a buffer of its own while compiling; else unchanged.

    Inductor inlines a scalar expression (a power, square root or division of the step count,
    a trust ratio of two norms, a block's ``sqrt(v) + eps``) into the elementwise loop that uses
    it and evaluates it once per vector of 16 elements: on the 2-core CPU that made AdamW-like
    fused steps 2.2x slower than the bandwidth floor, and Adam-mini's per-block denominators cost
    it 18.6 ms per step where 12.9 ms remain with them stored. A value read from a realized
    buffer is computed once per launch. For a 0-dim tensor, stacking two copies forces the
    buffer (inductor folds a one-element stack into a view and inlines it again). A per-block
    tensor (``(blocks, 1)``) becomes the maximum over :data:`MATERIALIZE_WIDTH` broadcast copies
    of itself: a reduction always gets a buffer of the block shape, one store per block. That is
    the value itself, NaN and signed zeros included. It replaced a ``cat`` of the value and its
    negation (a buffer twice the size, written through two views): Adam-mini's fused step on the
    24.2M benchmark model took 0.91x, 0.92x and 0.93x the time of the ``cat`` form in three
    alternated runs (2 threads), with the same trajectory bit for bit. For 0-dim values the same
    reduction measured slower than the stack (LAMB 1.07x, AdaBelief 1.00x), so they keep it.
    """
    if isinstance(scalar, Tensor) and torch.compiler.is_compiling():
        if scalar.dim() == 0:
            return torch.stack([scalar, scalar])[0]
        return scalar.unsqueeze(-1).expand(*scalar.shape, MATERIALIZE_WIDTH).amax(dim=-1)
    return scalar


@overload
def scalar_sqrt(value: float) -> float: ...
@overload
def scalar_sqrt(value: Tensor) -> Tensor: ...
def scalar_sqrt(value: Scalar) -> Scalar:
    """``math.sqrt`` for a float (the eager path's exact rounding), ``Tensor.sqrt`` for a tensor."""
    if isinstance(value, Tensor):
        return materialized(value.sqrt())
    return math.sqrt(value)


def add_scaled_(tensor: Tensor, other: Tensor, scale: Scalar) -> Tensor:
    """``tensor += scale * other`` in place, for a float or 0-dim tensor ``scale``."""
    if isinstance(scale, Tensor):
        return tensor.add_(other * materialized(scale))
    return tensor.add_(other, alpha=scale)


def addcmul_scaled_(tensor: Tensor, a: Tensor, b: Tensor, scale: Scalar) -> Tensor:
    """``tensor += scale * a * b`` in place, for a float or 0-dim tensor ``scale``."""
    if isinstance(scale, Tensor):
        return tensor.add_(a * b * materialized(scale))
    return tensor.addcmul_(a, b, value=scale)


def addcdiv_scaled_(tensor: Tensor, a: Tensor, b: Tensor, scale: Scalar) -> Tensor:
    """``tensor += scale * a / b`` in place, for a float or 0-dim tensor ``scale``."""
    if isinstance(scale, Tensor):
        return tensor.add_(a / b * materialized(scale))
    return tensor.addcdiv_(a, b, value=scale)


def lerp_(tensor: Tensor, end: Tensor, weight: Scalar) -> Tensor:
    """``tensor += weight * (end - tensor)`` in place (``torch.lerp_``), for any ``weight`` form."""
    if isinstance(weight, Tensor):
        weight = weight.to(tensor.dtype)
    return tensor.lerp_(end, weight)


def lerp(tensor: Tensor, end: Tensor, weight: Scalar) -> Tensor:
    """Out-of-place :func:`lerp_`."""
    if isinstance(weight, Tensor):
        weight = weight.to(tensor.dtype)
    return tensor.lerp(end, weight)


def increment_steps(steps: Sequence[Tensor]) -> list[float]:
    """Add one to each 0-dim step counter in place; return the new values (one host sync)."""
    steps = list(steps)
    torch._foreach_add_(steps, 1.0)
    values: list[float] = torch.stack(steps).tolist()
    return values


@overload
def bias_correction(beta: float, step: float) -> float: ...
@overload
def bias_correction(beta: Tensor, step: Scalar) -> Tensor: ...
@overload
def bias_correction(beta: Scalar, step: Tensor) -> Tensor: ...
@overload
def bias_correction(beta: Scalar, step: Scalar) -> Scalar: ...
def bias_correction(beta: Scalar, step: Scalar) -> Scalar:
    """``1 - beta**step``: the Adam bias correction of an EMA with decay ``beta``."""
    return materialized(1.0 - beta**step)


def update_moments_(exp_avg: Tensor, exp_avg_sq: Tensor, grad: Tensor, beta1: Scalar, beta2: Scalar) -> None:
    """Adam's two EMAs in place: ``m <- lerp(m, g, 1 - b1)``, ``v <- b2 v + (1 - b2) g^2``."""
    lerp_(exp_avg, grad, 1.0 - beta1)
    addcmul_scaled_(exp_avg_sq.mul_(beta2), grad, grad, 1.0 - beta2)


def foreach_update_moments_(
    exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor], grads: list[Tensor], beta1: float, beta2: float
) -> None:
    """Foreach form of :func:`update_moments_`."""
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)


def decay_weights_(param: Tensor, lr: Scalar, weight_decay: Scalar) -> None:
    """Decoupled weight decay in place: ``p <- p * (1 - lr * weight_decay)``.

    Skipped for a float ``weight_decay == 0``; a tensor one always multiplies (free when fused).
    """
    if isinstance(weight_decay, Tensor) or weight_decay != 0.0:
        param.mul_(1.0 - lr * weight_decay)


def foreach_decay_weights_(params: list[Tensor], lr: float, weight_decay: float) -> None:
    """Foreach form of :func:`decay_weights_`."""
    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)


def adamw_step_(
    param: Tensor,
    grad: Tensor,
    state: dict[str, Tensor],
    lr: Scalar,
    betas: tuple[Scalar, Scalar],
    eps: Scalar,
    weight_decay: Scalar,
) -> None:
    """One AdamW step on ``param`` with ``state`` holding ``exp_avg``, ``exp_avg_sq``, ``step``.

    Decoupled decay first, eps added to the bias-corrected root (torch's AdamW form).
    """
    beta1, beta2 = betas
    decay_weights_(param, lr, weight_decay)
    step = increment_step(state["step"])
    update_moments_(state["exp_avg"], state["exp_avg_sq"], grad, beta1, beta2)
    denom = (state["exp_avg_sq"].sqrt() / materialized(bias_correction(beta2, step) ** 0.5)).add_(eps)
    addcdiv_scaled_(param, state["exp_avg"], denom, -lr / bias_correction(beta1, step))


def foreach_adamw_step_(
    params: list[Tensor],
    grads: list[Tensor],
    states: Sequence[dict[str, Tensor]],
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> None:
    """Foreach form of :func:`adamw_step_` (same arithmetic, one kernel per op over the list)."""
    beta1, beta2 = betas
    foreach_decay_weights_(params, lr, weight_decay)
    steps = increment_steps([s["step"] for s in states])
    exp_avgs = [s["exp_avg"] for s in states]
    exp_avg_sqs = [s["exp_avg_sq"] for s in states]
    foreach_update_moments_(exp_avgs, exp_avg_sqs, grads, beta1, beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, [bias_correction(beta2, s) ** 0.5 for s in steps])
    torch._foreach_add_(denoms, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denoms, [-lr / bias_correction(beta1, s) for s in steps])


def norm_dtype(tensor: Tensor) -> torch.dtype:
    """The dtype to accumulate a norm or sum of squares of ``tensor`` in.

    float32-or-wider (the tensor's dtype promoted with float32), except inside a compiled CPU
    update, where it is float64. Inductor sums a float32 reduction of more than 4,096 elements
    through a cascade (pairwise) helper that keeps its partial sums in memory; a float64
    accumulator stays in registers and is the more accurate of the two. On the 2-core CPU, sums of
    squares over the benchmark model's 32 matrices (24M float32 entries): 4.2 ms with the cascade,
    3.3 ms in float64, worst relative error 7e-7 against 2e-10. Fused steps, alternated in one
    process: AdaGrad-Norm 0.93x, LARS 0.96x, Adam-mini 0.98x, LAMB unchanged (1.02x).
    """
    if tensor.device.type == "cpu" and torch.compiler.is_compiling():
        return torch.float64
    return torch.promote_types(tensor.dtype, torch.float32)


def trust_ratio(weight_norm: Tensor, update_norm: Tensor, numerator_scale: float = 1.0) -> Tensor:
    """``scale * ||w|| / ||u||``, or 1 where either norm is zero (layer-wise adaptation).

    Works elementwise on stacked norms too, so foreach paths compute all ratios at once.
    """
    ratio = numerator_scale * weight_norm / update_norm
    usable = (weight_norm > 0) & (update_norm > 0)
    return torch.where(usable, ratio, torch.ones_like(ratio))


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    """The l2 norm of all ``tensors`` taken together, as a 0-dim float32-or-wider tensor.

    Tensors may mix dtypes and devices; the result is on the first tensor's device. The number
    of torch calls depends on the number of (device, dtype) buckets, not of tensors.
    """
    if not tensors:
        return torch.zeros(())
    buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for tensor in tensors:
        buckets.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    dtype = torch.float32
    for _, bucket_dtype in buckets:
        dtype = torch.promote_types(dtype, bucket_dtype)
    device = tensors[0].device
    partial = [
        torch.linalg.vector_norm(torch.stack(torch._foreach_norm(bucket, 2, dtype=dtype))).to(device)
        for bucket in buckets.values()
    ]
    return partial[0] if len(partial) == 1 else torch.linalg.vector_norm(torch.stack(partial))


def nan_preserving_sign(tensor: Tensor) -> Tensor:
    """``sign(x)`` as a new tensor, except that a non-finite entry (NaN or ±inf) gives NaN.

    ``torch.sign`` maps NaN to 0, which would silently freeze a coordinate whose gradient is
    NaN in a stateless sign method. Adding ``0 * x`` (one extra in-place pass) keeps the
    library's rule that a bad gradient shows up in the parameter; ``sign(±inf)`` becomes NaN too.
    """
    return tensor.sign().add_(tensor, alpha=0.0)


def foreach_nan_preserving_sign(tensors: list[Tensor]) -> list[Tensor]:
    """Foreach form of :func:`nan_preserving_sign` (tensors of one device and dtype)."""
    signs = list(torch._foreach_sign(tensors))
    torch._foreach_add_(signs, tensors, alpha=0.0)
    return signs


def per_tensor_norms(tensors: Sequence[Tensor], ord: float) -> Tensor:
    """The ``ord``-norm of each tensor, as a float64 vector in the order of ``tensors``.

    ``torch._foreach_norm`` runs once per (device, dtype) bucket, in float32-or-wider; the
    result lives on the first tensor's device. Zero-size tensors give 0 (``_foreach_norm``
    rejects them for ``ord=inf``). The number of torch calls depends on the buckets only.
    """
    tensors = list(tensors)
    device = tensors[0].device if tensors else torch.device("cpu")
    buckets: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[int]]] = {}
    for index, tensor in enumerate(tensors):
        if 0 not in tensor.shape:  # shape, not numel(): no torch call per tensor
            bucket = buckets.setdefault((tensor.device, tensor.dtype), ([], []))
            bucket[0].append(tensor)
            bucket[1].append(index)
    out = torch.zeros(len(tensors), dtype=torch.float64, device=device)
    for (_, dtype), (bucket_tensors, indices) in buckets.items():
        norms = torch._foreach_norm(bucket_tensors, ord, dtype=torch.promote_types(dtype, torch.float32))
        values = torch.stack(norms).to(device=device, dtype=torch.float64)
        if len(indices) == len(tensors):
            return values
        out[indices] = values
    return out
