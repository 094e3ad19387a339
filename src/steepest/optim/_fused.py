"""The fused path: an optimizer's own per-tensor update, compiled over a bucket's tensor lists.

One mechanism serves every elementwise optimizer. :func:`fused_update` hands
``type(optimizer)._single_tensor_update`` (the readable reference loop) to :func:`torch.compile`
once per optimizer class and calls it on the parameters, gradients and state of one (device,
dtype) bucket. Inductor fuses the unrolled loop into kernels that read the parameter, gradient
and state once and write the parameter and state once, which is the memory-bandwidth floor of an
elementwise step.

Hyperparameters travel as tensors. Every float in the param group (``lr``, each entry of
``betas``, ``weight_decay``, ``eps``, ...) is replaced by a 0-dim tensor on the bucket's device,
refreshed in place each step from the group (:class:`HyperparameterTensors`). The compiled graph
takes them as inputs, so a scheduler that changes them every step triggers no recompilation. Only
non-float entries (booleans, strings, integers) and an optimizer's ``fused_constant_hyperparameters``
(exponents) are baked into the graph; changing one recompiles.
The per-tensor updates are written so that every scalar may be a float or a 0-dim tensor (see
the ``Scalar`` helpers in :mod:`steepest.optim._functional`); in the eager per-tensor path they are
floats, as before.

Precision: the hyperparameter tensors are float64 for float64 parameters and float32 otherwise,
so scalar arithmetic (``1 - lr * wd``, bias corrections) runs in that precision inside the kernel,
where the eager path computes it in double on the host. The fused and per-tensor trajectories
therefore agree to rounding: the conformance matrix checks float64 to 1e-12 and float32 to 1e-5
relative.

Compilation cost: the first fused step of each (optimizer class, group layout, dtype, device)
signature compiles. On the 2-core CPU machine, for 84 transformer-shaped tensors (24.2M
parameters; the 32 matrices compiled, the 52 vectors under :data:`FUSED_MIN_TENSOR_NUMEL`
elements on the foreach path): 5-40 s with a cold cache (seen: SignSGD 5 s, Signum 7 s, LARS
16 s, FRUGAL's and GaLore's dense AdamW 19-22 s, diffGrad 23 s, LAMB 31 s, AdaBelief 35 s, Adan
39 s; bias corrections add scalar graph nodes per tensor). With all 84 tensors compiled it was
10-140 s (SignSGD 11 s, Lion 25 s, SCALE 45 s, Adam-mini 56-72 s, Adan 111 s). 1-6 s when
inductor's on-disk FX graph cache already holds the kernels (a second run of the same model). A
tiny model takes 1-5 s cold.
Later steps reuse the compiled code: dynamo caches it on the update's code object and guards on
the tensors' shapes, dtypes and devices and on the non-float hyperparameters. Inductor's FX graph
cache (on by default; directory ``TORCHINDUCTOR_CACHE_DIR``) carries kernels across runs.

Fallback: when compilation is unavailable (no C++ compiler or Triton, an unsupported Python, a
graph break in an update, dynamo's recompile limit reached), the optimizer warns once
(:class:`FusedFallbackWarning`) with the reason and runs its foreach path from then on. Nothing
has been modified when compilation fails: dynamo compiles the whole graph before running it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from steepest.optim._write_backs import write_backs_pass

#: ``fused=None`` picks the fused path for a group holding at least this many elements, whose
#: parameters are all on one device type with a compile backend, and whose ``foreach`` is ``None``
#: (an explicit ``foreach=True`` or ``False`` asks for that path). At 16.8M elements the step time
#: saved on this project's 2-core CPU machine (~1.5 ms per million elements for Lion and AdamW-like
#: updates, benchmarks/step_time.py) repays a cold compile (5-40 s) within a few hundred to a few
#: thousand steps; below it a run may be too short to.
FUSED_AUTO_MIN_NUMEL = 1 << 24

#: Tensors with fewer elements than this take the foreach path inside a fused step (unless the
#: optimizer's update spans the whole group, ``foreach_whole_group``). A compiled update pays a
#: fixed cost per tensor (its scalar kernels, their thread barriers, the wrapper's buffer and view
#: calls: 15-30 us on the 2-core CPU) that its saved bandwidth only repays above ~16K elements;
#: the foreach path handles the small ones (norm gains, biases) in a few multi-tensor calls.
#: Measured on the 24.2M benchmark model (84 tensors, 52 of them vectors of at most 2,048
#: elements), step time with the split over step time with every tensor compiled, alternated in
#: one process: SCALE 0.92, Lion 0.99, Adam-mini 1.00. 0 compiles every tensor.
FUSED_MIN_TENSOR_NUMEL = 1 << 14

#: Device types on which ``fused=None`` may pick the fused path (inductor has a backend there).
FUSED_AUTO_DEVICE_TYPES = frozenset({"cpu", "cuda"})

#: The torch.compile backend used for fused steps; tests replace it to exercise the fallback.
COMPILE_BACKEND: str | Callable[..., Any] = "inductor"


#: Inductor settings for the update graphs. By default inductor writes a pointwise result read by
#: more than 4 consumers to a fresh parameter-sized buffer; an update that needs a norm of such a
#: result (LAMB's ``u``) then pays a write and a read of that temporary, plus page faults, since
#: glibc serves each fresh 16 MB buffer with a new ``mmap`` every step. A high threshold makes
#: inductor recompute the pointwise chain in the reduction loop and again in the apply loop instead:
#: bandwidth-bound updates have arithmetic to spare. Measured on LAMB over 4 x 4M float32 (2 threads,
#: fresh inductor cache each run): 16 -> 12 stores in the generated kernel (only m, v and p), step
#: 17-44 ms (bimodal, page faults) -> 17-23 ms; floor 12.8 ms.
#: ``size_asserts`` off: the generated wrapper would re-check every input's size and stride on
#: each call (330 checks per step for the benchmark's 84 tensors), which dynamo's guards have
#: already checked before the call. Measured on SCALE over the 24.2M benchmark model, alternated
#: with the asserts on: 0.93x the step time.
#: ``post_grad_custom_post_pass``: :mod:`steepest.optim._write_backs` moves each parameter and
#: state write-back to just after the last node that depends on the old or the new value, so an
#: update that takes a norm before it writes (LARS) runs each tensor's norm and write passes back
#: to back, where the second finds the tensor in the last-level cache, instead of all norms first.
INDUCTOR_OPTIONS: dict[str, Any] = {"realize_reads_threshold": 100, "size_asserts": False}
if (_write_backs_pass := write_backs_pass()) is not None:
    INDUCTOR_OPTIONS["post_grad_custom_post_pass"] = _write_backs_pass


class FusedFallbackWarning(RuntimeWarning):
    """A ``fused`` optimizer could not compile its update and runs its foreach path instead."""


_COMPILED: dict[tuple[type, Any], Callable[..., Any]] = {}


def compiled_update(cls: type) -> Callable[..., Any]:
    """``cls._single_tensor_update`` compiled with the current backend (one wrapper per class)."""
    key = (cls, COMPILE_BACKEND)
    if key not in _COMPILED:
        update = cls._single_tensor_update  # type: ignore[attr-defined]
        options = INDUCTOR_OPTIONS if COMPILE_BACKEND == "inductor" else None
        _COMPILED[key] = torch.compile(
            update, backend=COMPILE_BACKEND, fullgraph=True, dynamic=False, options=options
        )
    return _COMPILED[key]


def scalar_dtype_for(tensors: Sequence[Tensor]) -> torch.dtype:
    """float64 if any tensor is float64, else float32: the precision of the hyperparameter tensors."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class HyperparameterTensors:
    """0-dim tensor copies of a param group's float hyperparameters, refreshed in place each step.

    The same tensor objects are handed to the compiled update every step (per device and dtype),
    so changing ``group["lr"]`` changes a value, not a graph input's identity or a guard.
    """

    def __init__(self) -> None:
        self._tensors: dict[tuple[int, str, int, torch.device, torch.dtype], Tensor] = {}

    def group_view(
        self,
        index: int,
        group: Mapping[str, Any],
        float_names: frozenset[str],
        device: torch.device,
        dtype: torch.dtype,
        constant_names: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """A copy of ``group`` without its parameters, real-valued hyperparameters as 0-dim tensors.

        ``float_names`` are the hyperparameters whose rule admits any real number (``lr=1`` is an
        int but schedulers make it a float); integers under other names (counts, intervals) stay.
        ``constant_names`` stay as they are, constants of the compiled graph
        (``fused_constant_hyperparameters``).
        """
        view: dict[str, Any] = {}
        for name, value in group.items():
            if name in ("params", "param_names"):
                continue
            if name in constant_names:
                view[name] = value
                continue
            if _is_real(value, name in float_names):
                view[name] = self._scalar(index, name, 0, value, device, dtype)
            elif isinstance(value, tuple | list) and value and all(_is_real(v, name in float_names) for v in value):
                view[name] = tuple(self._scalar(index, name, i, v, device, dtype) for i, v in enumerate(value))
            else:
                view[name] = value
        return view

    def _scalar(
        self, index: int, name: str, position: int, value: float | Tensor, device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        key = (index, name, position, device, dtype)
        tensor = self._tensors.get(key)
        if tensor is None:
            tensor = self._tensors[key] = torch.zeros((), device=device, dtype=dtype)
        if isinstance(value, Tensor):
            tensor.copy_(value)
        else:
            tensor.fill_(value)
        return tensor


def _is_real(value: Any, ints_too: bool) -> bool:
    if isinstance(value, Tensor):
        return value.dim() == 0 and value.is_floating_point()
    if isinstance(value, bool):
        return False
    return isinstance(value, float) or (ints_too and isinstance(value, int))


def auto_fused(params: Sequence[Tensor]) -> bool:
    """The ``fused=None`` rule for one group's parameters (see :data:`FUSED_AUTO_MIN_NUMEL`)."""
    if not params or not compile_supported():
        return False
    if len({p.device.type for p in params}) != 1 or params[0].device.type not in FUSED_AUTO_DEVICE_TYPES:
        return False
    return sum(p.numel() for p in params) >= FUSED_AUTO_MIN_NUMEL


Bucket = tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]


def split_small_tensors(buckets: Sequence[Bucket]) -> tuple[list[Bucket], list[Bucket]]:
    """Each bucket's tensors of at least :data:`FUSED_MIN_TENSOR_NUMEL` elements, and the rest.

    Returns ``(compiled, small)``, empty buckets dropped; the order within a bucket is kept.
    """
    compiled: list[Bucket] = []
    small: list[Bucket] = []
    for params, grads, states in buckets:
        large: list[int] = []
        rest: list[int] = []
        for i, p in enumerate(params):
            (large if p.numel() >= FUSED_MIN_TENSOR_NUMEL else rest).append(i)
        for indices, out in ((large, compiled), (rest, small)):
            if indices:
                out.append(([params[i] for i in indices], [grads[i] for i in indices], [states[i] for i in indices]))
    return compiled, small


def compile_supported() -> bool:
    """Whether dynamo can run here at all (Python version, platform)."""
    try:
        return bool(torch._dynamo.is_dynamo_supported())
    except Exception:  # any failure to even ask means no
        return False


def fused_update(
    optimizer: Any,
    index: int,
    group: Mapping[str, Any],
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Any]],
) -> bool:
    """Run the compiled per-tensor update on one bucket; return ``False`` if it could not compile.

    On failure the optimizer is marked (``optimizer._fused_unavailable``), a
    :class:`FusedFallbackWarning` is issued once, and nothing has been updated.
    """
    if getattr(optimizer, "_fused_unavailable", None) is not None:
        return False
    if not compile_supported():
        _disable(optimizer, "torch.compile is not supported on this Python/platform")
        return False
    hyper = optimizer.__dict__.setdefault("_fused_hyperparameters", HyperparameterTensors())
    view = hyper.group_view(
        index,
        group,
        optimizer.real_hyperparameters(),
        params[0].device,
        scalar_dtype_for(params),
        optimizer.fused_constant_hyperparameters,
    )
    view.update(optimizer.fused_static_facts(group, params))
    try:
        compiled_update(type(optimizer))(optimizer, view, params, grads, writable_scalars(states))
    except torch._dynamo.exc.TorchDynamoException as err:
        _disable(optimizer, f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
        return False
    return True


def _is_cpu_float64_scalar(value: Any) -> bool:
    return (
        isinstance(value, Tensor) and value.dim() == 0 and value.dtype == torch.float64 and value.device.type == "cpu"
    )


def writable_scalars(states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``states`` with every 0-dim float64 CPU tensor handed over as a 1-element view of itself.

    Compiled code silently drops in-place writes to 0-dim float64 CPU inputs (torch 2.13: dynamo
    treats them as Python scalars; float32 and 1-element tensors are written back correctly). A
    ``view(1)`` shares the storage, so the write lands in the optimizer's state. Updates that keep
    such state (AdaGrad-Norm's float64 accumulator) must accept shape ``(1,)`` for it when compiled.
    """
    if not any(_is_cpu_float64_scalar(v) for state in states for v in state.values()):
        return states
    return [{k: v.view(1) if _is_cpu_float64_scalar(v) else v for k, v in state.items()} for state in states]


def _disable(optimizer: Any, reason: str) -> None:
    optimizer._fused_unavailable = reason
    warnings.warn(
        f"{type(optimizer).__name__}(fused=True): the update could not be compiled ({reason}); "
        "using the foreach path from now on",
        FusedFallbackWarning,
        stacklevel=4,
    )
