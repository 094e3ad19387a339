"""The fused path: an optimizer's own per-tensor update, compiled over the step's tensor lists.

One mechanism serves every elementwise optimizer. :func:`fused_step` runs
``type(optimizer)._single_tensor_update`` (the readable reference loop) under
:func:`torch.compile` on the parameters, gradients and state of every (device, dtype) bucket of
every fused param group, in one compiled call. Inductor fuses the unrolled loop into kernels
that read the parameter, gradient and state once and write the parameter and state once, which
is the memory-bandwidth floor of an elementwise step.

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

One compiled call per step: the updates of every fusing param group (each device and dtype
bucket of it) run inside one graph (:func:`fused_step`). Dynamo compiles the whole graph before it
runs any of it, so a step is applied to every fused group or, when compilation fails, to none, and
the foreach path then takes the step. Each layout of a step (the groups, their tensors' shapes,
dtypes and devices) gets a code object of its own, so dynamo's recompile limit (8 graphs per code
object) is never reached by a model with many groups or shapes; a layout compiles once, and a
second optimizer instance with the same layout reuses its graph.

``fused=True`` is opt-in (``fused=None``, the default, means the foreach path, as in torch): the
compiled path has not yet run on a GPU, and its first step compiles. Every tensor is compiled,
whatever its size.

Compilation cost: the first fused step of each (optimizer class, layout) compiles. On the 2-core
CPU machine, for 84 transformer-shaped tensors (24.2M parameters): 10-140 s with a cold cache
(SignSGD 11 s, Lion 25 s, SCALE 45 s, Adam-mini 56-72 s, Adan 111 s; bias corrections add scalar
graph nodes per tensor). 1-6 s when inductor's on-disk FX graph cache already holds the kernels
(a second run of the same model). A tiny model takes 1-5 s cold.
Later steps reuse the compiled code: dynamo guards on the tensors' shapes, dtypes and devices and
on the non-float hyperparameters. Inductor's FX graph cache (on by default; directory
``TORCHINDUCTOR_CACHE_DIR``) carries kernels across runs.

Fallback: when compilation fails for any reason (no C++ compiler or Triton, an unsupported
Python, a graph break in an update, dynamo's recompile limit), the optimizer warns once
(:class:`FusedFallbackWarning`) with the reason and runs its foreach path from then on, starting
with the step that failed. Nothing has been modified when compilation fails.

Importing this module imports neither dynamo nor inductor: they load on the first fused step.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from steepest.optim._names import user_stacklevel

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

#: Whether the inductor options carry the write-back pass (tests turn it off to compare).
WRITE_BACKS_PASS = True


def inductor_options() -> dict[str, Any]:
    """:data:`INDUCTOR_OPTIONS`, plus the write-back pass where this torch supports custom passes.

    Built on the first fused step, so that importing steepest does not import inductor.
    """
    options = dict(INDUCTOR_OPTIONS)
    if WRITE_BACKS_PASS:
        from steepest.optim._write_backs import write_backs_pass

        if (write_backs := write_backs_pass()) is not None:
            options["post_grad_custom_post_pass"] = write_backs
    return options


class FusedFallbackWarning(RuntimeWarning):
    """A ``fused`` optimizer could not compile its update and runs its foreach path instead."""


#: A fused step's task: (param group index, group, params, grads, states) of one bucket.
Task = tuple[int, Mapping[str, Any], list[Tensor], list[Tensor], list[dict[str, Any]]]

_COMPILED: dict[tuple[Any, ...], Callable[..., Any]] = {}


def _update_every_bucket(update: Callable[..., None]) -> Callable[..., None]:
    """The body of a fused step: ``update`` (a per-tensor update) on each bucket, in one graph.

    ``update`` is a closure variable, not looked up from ``type(optimizer)``: that lookup makes
    dynamo guard on the optimizer object itself, and every new instance would compile anew.
    """

    def body(
        optimizer: Any,
        views: list[dict[str, Any]],
        params: list[list[Tensor]],
        grads: list[list[Tensor]],
        states: list[list[dict[str, Any]]],
    ) -> None:
        for view, bucket_params, bucket_grads, bucket_states in zip(views, params, grads, states, strict=True):
            update(optimizer, view, bucket_params, bucket_grads, bucket_states)

    return body


def layout_key(tasks: Sequence[Task]) -> tuple[Any, ...]:
    """What makes a step a different graph: each bucket's group index and tensors' shapes, dtypes, devices."""
    return tuple(
        (index, tuple((p.shape, p.dtype, p.device) for p in params)) for index, _, params, _, _ in tasks
    )


def compiled_step(cls: type, layout: tuple[Any, ...]) -> Callable[..., Any]:
    """The fused step of ``cls`` for one ``layout``, compiled with the current backend.

    Each layout compiles a copy of :func:`_update_every_bucket` with a code object of its own:
    dynamo keeps its graphs and counts recompiles per code object, so a layout never evicts or
    counts against another. Instances of ``cls`` with the same layout share the graph.
    """
    key = (cls, COMPILE_BACKEND, layout)
    if key not in _COMPILED:
        body = _update_every_bucket(cls._single_tensor_update)  # type: ignore[attr-defined]
        code = body.__code__.replace(co_name=f"{cls.__name__}_fused_step_{len(_COMPILED)}")
        function = types.FunctionType(code, body.__globals__, code.co_name, body.__defaults__, body.__closure__)
        options = inductor_options() if COMPILE_BACKEND == "inductor" else None
        _COMPILED[key] = torch.compile(
            function, backend=COMPILE_BACKEND, fullgraph=True, dynamic=False, options=options
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
            tensor.copy_(value.detach().reshape(()))
        else:
            tensor.fill_(value)
        return tensor


def _is_real(value: Any, ints_too: bool) -> bool:
    if isinstance(value, Tensor):
        return value.numel() == 1 and value.is_floating_point()
    if isinstance(value, bool):
        return False
    return isinstance(value, float) or (ints_too and isinstance(value, int))


def compile_supported() -> bool:
    """Whether dynamo can run here at all (Python version, platform)."""
    try:
        return bool(torch._dynamo.is_dynamo_supported())
    except Exception:  # any failure to even ask means no
        return False


def fused_step(optimizer: Any, tasks: Sequence[Task]) -> bool:
    """Run the compiled per-tensor update over every task in one call; ``False`` if it could not compile.

    All or nothing: on any failure the optimizer is marked (``optimizer._fused_unavailable``), a
    :class:`FusedFallbackWarning` is issued once, and no parameter or state tensor has been
    written, so the caller runs the whole step on its foreach path.
    """
    if getattr(optimizer, "_fused_unavailable", None) is not None:
        return False
    if not compile_supported():
        _disable(optimizer, "torch.compile is not supported on this Python/platform")
        return False
    hyper = optimizer.__dict__.setdefault("_fused_hyperparameters", HyperparameterTensors())
    views = []
    for index, group, params, _, _ in tasks:
        view = hyper.group_view(
            index,
            group,
            optimizer.real_hyperparameters(),
            params[0].device,
            scalar_dtype_for(params),
            optimizer.fused_constant_hyperparameters,
        )
        view.update(optimizer.fused_static_facts(group, params))
        views.append(view)
    step = compiled_step(type(optimizer), layout_key(tasks))
    try:
        step(
            optimizer,
            views,
            [task[2] for task in tasks],
            [task[3] for task in tasks],
            [writable_scalars(task[4]) for task in tasks],
        )
    except Exception as err:  # any failure to compile: FailOnRecompileLimitHit is no TorchDynamoException
        message = str(err).strip()
        _disable(optimizer, f"{type(err).__name__}: {message.splitlines()[0] if message else ''}")
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
        stacklevel=user_stacklevel(),  # the user's step() call, however deep the dispatch
    )
