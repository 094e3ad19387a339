"""The benchmark runner: train one optimizer on one workload with one seed, and record everything.

One run is described by a :class:`RunSpec` (workload, size, optimizer key, hyperparameters, seed, study and
trial ids, optional step-budget override) and produces a :class:`RunResult` with one :class:`EvalPoint` per
evaluation. The run is deterministic for a given spec (seeded model, seeded batch order, no global RNG) on a
given machine and thread count.

What is measured, and how:

* **time**: ``time.perf_counter`` around the training steps only; evaluation, bookkeeping and the gradient-norm
  read at evaluation steps are outside the clock (AlgoPerf's untimed evaluation).
* **function / gradient evaluations**: the closure handed to the optimizer counts its calls. A call under
  ``torch.enable_grad()`` is one function and one gradient evaluation; a call under ``torch.no_grad()`` is one
  function evaluation (line-search trial points, zeroth-order estimates). Optimizers that take no closure are
  charged one of each per step.
* **step size**: ``lr`` of the first param group, and, for optimizers that expose it, the accepted step size
  (an attribute ``last_step_size``, a ``"step_size"`` key of a ``last_info`` dict attribute, or a ``step_size``
  entry of the first param group).
* **memory**: ``steepest.state_bytes(optimizer)`` (exact bytes of optimizer state) and the process's resident
  set high-water mark (``VmHWM``), reset at the start of each run through ``/proc/self/clear_refs`` where Linux
  allows it (so the peak belongs to this run); where it cannot be reset the value is the process's peak so far
  and :attr:`RunResult.peak_rss_scope` says ``"process"``.

The closure contract (one rule across the library): the closure zeroes the gradients, computes the loss, calls
``loss.backward()`` only ``if torch.is_grad_enabled()`` (with ``create_graph=True`` when the optimizer's
capabilities say ``needs_create_graph``), and returns the loss.

A run whose loss becomes NaN or infinite stops and is recorded with status ``"diverged"``; an exception from the
optimizer is recorded with status ``"error"``; neither stops a sweep.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

import steepest
from steepest.bench.workloads import Size, Workload, get_workload
from steepest.optim import create_optimizer, optimizer_info, state_bytes
from steepest.optim._base import Capabilities

#: Run statuses.
STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"
STATUS_ERROR = "error"


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run; :meth:`key` identifies it in the result store.

    Attributes:
        workload: registry key of the workload.
        size: ``"tiny"``, ``"quick"`` or ``"full"``.
        optimizer: registry key of the optimizer.
        hyperparameters: keyword arguments for :func:`steepest.create_optimizer`.
        seed: model-initialisation and batch-order seed.
        study: tuning study id (AlgoPerf's K studies); the seed index in defaults-only mode.
        trial: trial id within the study.
        max_steps: step-budget override (``None``: the workload's budget).
        version: the library version the run was made with (part of the key).
    """

    workload: str
    size: Size
    optimizer: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    study: int = 0
    trial: int = 0
    max_steps: int | None = None
    version: str = steepest.__version__

    def hyperparameters_json(self) -> str:
        """The hyperparameters as canonical JSON (sorted keys; tuples become lists)."""
        return json.dumps(self.hyperparameters, sort_keys=True, default=repr)

    def key(self) -> str:
        """A stable hash of every field: two specs with the same key are the same run."""
        payload = json.dumps(
            {
                "workload": self.workload,
                "size": self.size,
                "optimizer": self.optimizer,
                "hyperparameters": json.loads(self.hyperparameters_json()),
                "seed": self.seed,
                "study": self.study,
                "trial": self.trial,
                "max_steps": self.max_steps,
                "version": self.version,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def label(self) -> str:
        """A short human-readable name for progress bars and logs."""
        return f"{self.workload}/{self.size} {self.optimizer} seed={self.seed} study={self.study} trial={self.trial}"


@dataclass
class EvalPoint:
    """What is recorded at one evaluation (after ``step`` optimizer steps)."""

    step: int
    examples: int
    wall_time_s: float
    eval_time_s: float
    train_loss: float
    val_loss: float
    metric: float
    lr: float | None
    step_size: float | None
    grad_norm: float | None
    func_evals: int
    grad_evals: int
    state_bytes: int
    peak_rss_bytes: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    """The outcome of one run: status, time-to-target in several units, memory and the eval curve.

    ``*_to_target`` fields are ``None`` when the target was not reached; they are read at the first
    evaluation that meets the target (so their resolution is the evaluation period).
    """

    spec: RunSpec
    status: str
    reached: bool
    target_metric: str
    target_value: float
    higher_is_better: bool
    steps_to_target: int | None
    examples_to_target: int | None
    grad_evals_to_target: int | None
    func_evals_to_target: int | None
    time_to_target_s: float | None
    total_steps: int
    wall_time_s: float
    eval_time_s: float
    final_metrics: dict[str, float]
    state_bytes: int
    peak_rss_bytes: int
    rss_at_start_bytes: int
    peak_rss_scope: str
    error: str | None
    environment: dict[str, Any]
    evals: list[EvalPoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


class EvalCounter:
    """Counts function and gradient evaluations made through :meth:`wrap`-ped closures."""

    def __init__(self) -> None:
        self.func_evals = 0
        self.grad_evals = 0

    def charge(self, with_grad: bool) -> None:
        """Count one function evaluation, plus one gradient evaluation if ``with_grad``."""
        self.func_evals += 1
        if with_grad:
            self.grad_evals += 1

    def charge_hvps(self, optimizer: Optimizer) -> None:
        """Charge the Hessian-vector products the last step made, one gradient evaluation each.

        Curvature optimizers report them as ``optimizer.last_info["hvp_evals"]`` (a product costs about
        one more backward pass through the graph the gradient built, i.e. about a gradient evaluation).
        """
        info = getattr(optimizer, "last_info", None)
        if isinstance(info, dict):
            self.grad_evals += int(info.get("hvp_evals", 0))


# -- memory ------------------------------------------------------------------------------------------------

_STATUS = "/proc/self/status"


def _vm_kib(field_name: str) -> int | None:
    try:
        with open(_STATUS) as fh:
            match = re.search(rf"^{field_name}:\s+(\d+) kB", fh.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux ``clear_refs`` 5); ``False`` where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def current_rss_bytes() -> int:
    """Resident set size now (0 if unknown)."""
    kib = _vm_kib("VmRSS")
    return 1024 * kib if kib is not None else 0


def peak_rss_bytes() -> int:
    """Resident set high-water mark: ``VmHWM``, else ``ru_maxrss`` (kilobytes on Linux, bytes on macOS)."""
    kib = _vm_kib("VmHWM")
    if kib is not None:
        return 1024 * kib
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else 1024 * maxrss)


# -- optimizer ---------------------------------------------------------------------------------------------


def capabilities_of(optimizer: Optimizer) -> Capabilities:
    """The optimizer's declared :class:`Capabilities` (torch's own optimizers get the defaults)."""
    caps = getattr(optimizer, "capabilities", None)
    return caps if isinstance(caps, Capabilities) else Capabilities()


def build_optimizer(key: str, workload: Workload, model: nn.Module, hyperparameters: dict[str, Any]) -> Optimizer:
    """The optimizer ``key`` for ``model``: parameters from the workload or :func:`steepest.optimizer_params`.

    A workload that overrides :meth:`Workload.param_groups` decides the parameters; otherwise
    ``steepest.optimizer_params(key, model, **workload.model_facts())`` builds them (named parameters,
    projected groups, ...) together with extra constructor arguments, which explicit ``hyperparameters``
    override.
    """
    extra: dict[str, Any]
    if type(workload).param_groups is not Workload.param_groups:
        params, extra = workload.param_groups(model, key), {}
    else:
        params, extra = steepest.optimizer_params(key, model, **workload.model_facts())
    return create_optimizer(key, params, **{**extra, **hyperparameters})


def _step_sizes(optimizer: Optimizer) -> tuple[float | None, float | None]:
    group = optimizer.param_groups[0] if optimizer.param_groups else {}
    lr = group.get("lr")
    lr_value = float(lr) if isinstance(lr, int | float | Tensor) else None
    accepted = getattr(optimizer, "last_step_size", None)
    info = getattr(optimizer, "last_info", None)
    if accepted is None and isinstance(info, dict):
        accepted = info.get("step_size")
    if accepted is None:
        accepted = group.get("step_size")
    step_size = float(accepted) if isinstance(accepted, int | float | Tensor) else None
    return lr_value, step_size


def _grad_norm(model: nn.Module) -> float | None:
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    if not grads:
        return None
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


def environment() -> dict[str, Any]:
    """Versions and machine facts stored with every run."""
    return {
        "steepest": steepest.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


# -- training ----------------------------------------------------------------------------------------------


def _finite(value: float) -> bool:
    return math.isfinite(value)


def train(
    workload: Workload,
    make_optimizer: Callable[[nn.Module], Optimizer],
    seed: int,
    spec: RunSpec,
    max_steps: int | None = None,
    stop_at_target: bool = False,
) -> RunResult:
    """Train ``workload``'s model from ``seed`` with the optimizer ``make_optimizer(model)`` builds.

    Evaluates (untimed) at step 0, every ``budget.eval_every`` steps and at the last step. The run stops at
    the step budget, at a NaN/inf loss (status ``"diverged"``), at an exception (status ``"error"``) or, if
    ``stop_at_target``, at the first evaluation meeting the target.

    Args:
        workload: the workload instance (its size is fixed).
        make_optimizer: builds the optimizer for the fresh model.
        seed: model and batch-order seed.
        spec: the spec this run belongs to (stored with the result).
        max_steps: step-budget override.
        stop_at_target: end the run once the target is met.
    """
    torch.manual_seed(seed)  # for optimizers that draw from the global RNG (zeroth-order, random projections)
    budget = workload.budget
    total = max_steps if max_steps is not None else budget.max_steps
    target = workload.target
    counter = EvalCounter()
    evals: list[EvalPoint] = []
    status, error = STATUS_OK, None
    train_time = eval_time = 0.0
    reached_at: EvalPoint | None = None
    step = 0
    optimizer: Optimizer | None = None
    last_grad_norm: float | None = None

    def evaluate() -> dict[str, float]:
        nonlocal eval_time
        start = time.perf_counter()
        model.eval()
        metrics = workload.evaluate(model)
        model.train()
        eval_time += time.perf_counter() - start
        return metrics

    def record(metrics: dict[str, float] | None = None) -> EvalPoint:
        nonlocal reached_at
        metrics = evaluate() if metrics is None else metrics
        lr, step_size = _step_sizes(optimizer) if optimizer is not None else (None, None)
        point = EvalPoint(
            step=step,
            examples=step * budget.batch_size,
            wall_time_s=train_time,
            eval_time_s=eval_time,
            train_loss=float(metrics["train_loss"]),
            val_loss=float(metrics["val_loss"]),
            metric=float(metrics[target.metric]),
            lr=lr,
            step_size=step_size,
            grad_norm=last_grad_norm,
            func_evals=counter.func_evals,
            grad_evals=counter.grad_evals,
            state_bytes=state_bytes(optimizer) if optimizer is not None else 0,
            peak_rss_bytes=peak_rss_bytes(),
            metrics={k: float(v) for k, v in metrics.items()},
        )
        evals.append(point)
        if reached_at is None and _finite(point.metric) and target.reached(metrics):
            reached_at = point
        return point

    model = workload.init_model(seed)
    model.train()
    # One-time costs are paid before the memory high-water mark is reset and outside the clock, so the first run
    # of a process is measured like the others: data a workload builds lazily (the first batch is drawn ahead, in
    # the same order, and the step-0 evaluation is made) and autograd's first backward pass (a throwaway
    # gradient in eval mode, which updates no batch-norm statistics and changes no parameter).
    batches: Iterator[Any] = workload.train_batches(seed)
    pending: list[Any] = [next(batches)]
    initial_metrics = evaluate()
    _warm_up(workload, model, pending[0])
    scope = "run" if reset_peak_rss() else "process"
    rss_start = current_rss_bytes()
    try:
        optimizer = make_optimizer(model)
    except Exception as err:  # a bad hyperparameter combination is a failed run, not a failed sweep
        optimizer = None
        status, error = STATUS_ERROR, f"{type(err).__name__}: {err}"
    if optimizer is not None:
        caps = capabilities_of(optimizer)
        first = record(initial_metrics)
        if not _finite(first.train_loss):
            status, error = STATUS_DIVERGED, "non-finite loss at initialisation"
        while status == STATUS_OK and step < total and not (stop_at_target and reached_at is not None):
            is_record_step = (step + 1) % budget.eval_every == 0 or step + 1 == total
            try:
                started = time.perf_counter()
                batch = pending.pop() if pending else next(batches)
                with warnings.catch_warnings():
                    # create_graph gradients are freed (set to None) after every step, as torch's warning asks
                    warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")
                    loss, grad_norm = _one_step(workload, model, optimizer, caps, batch, counter, is_record_step)
                train_time += time.perf_counter() - started
            except Exception as err:
                status, error = STATUS_ERROR, f"{type(err).__name__}: {err}"
                break
            step += 1
            if grad_norm is not None or is_record_step:
                last_grad_norm = grad_norm
            if loss is not None and not _finite(loss):
                status, error = STATUS_DIVERGED, f"non-finite training loss {loss} at step {step}"
                record()
                break
            if is_record_step:
                point = record()
                if not (_finite(point.train_loss) and _finite(point.val_loss)):
                    status, error = STATUS_DIVERGED, f"non-finite evaluation loss at step {step}"
    final = evals[-1] if evals else None
    return RunResult(
        spec=spec,
        status=status,
        reached=reached_at is not None,
        target_metric=target.metric,
        target_value=target.value,
        higher_is_better=target.higher_is_better,
        steps_to_target=reached_at.step if reached_at else None,
        examples_to_target=reached_at.examples if reached_at else None,
        grad_evals_to_target=reached_at.grad_evals if reached_at else None,
        func_evals_to_target=reached_at.func_evals if reached_at else None,
        time_to_target_s=reached_at.wall_time_s if reached_at else None,
        total_steps=step,
        wall_time_s=train_time,
        eval_time_s=eval_time,
        final_metrics=dict(final.metrics) if final else {},
        state_bytes=state_bytes(optimizer) if optimizer is not None else 0,
        peak_rss_bytes=peak_rss_bytes(),
        rss_at_start_bytes=rss_start,
        peak_rss_scope=scope,
        error=error,
        environment=environment(),
        evals=evals,
    )


def _warm_up(workload: Workload, model: nn.Module, batch: Any) -> None:
    # torch.optim's step imports torch._dynamo on first use (about 70 MiB of resident memory); import it here so
    # that this process-wide cost is not charged to whichever optimizer happens to run first.
    import torch._dynamo

    model.eval()
    try:
        with torch.enable_grad():
            workload.loss(model, batch).backward()
    except Exception:
        pass  # a failing loss shows up, and is recorded, in the first training step
    finally:
        model.zero_grad(set_to_none=True)
        model.train()


def _one_step(
    workload: Workload,
    model: nn.Module,
    optimizer: Optimizer,
    caps: Capabilities,
    batch: Any,
    counter: EvalCounter,
    want_grad_norm: bool,
) -> tuple[float | None, float | None]:
    """One optimizer step; returns the loss the step reports (if any) and the gradient norm (if asked)."""
    if not caps.requires_closure and not caps.gradient_free:
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = workload.loss(model, batch)
            loss.backward(create_graph=caps.needs_create_graph)
        counter.charge(with_grad=True)
        norm = _grad_norm(model) if want_grad_norm else None
        optimizer.step()
        counter.charge_hvps(optimizer)
        if caps.needs_create_graph:
            optimizer.zero_grad(set_to_none=True)  # free the double-backward graph
        return float(loss.detach()), norm

    norm_holder: list[float | None] = []

    def closure() -> Tensor:
        with_grad = torch.is_grad_enabled()
        counter.charge(with_grad)
        optimizer.zero_grad(set_to_none=True)
        value = workload.loss(model, batch)
        if with_grad:
            value.backward(create_graph=caps.needs_create_graph)
            if want_grad_norm and not norm_holder:
                norm_holder.append(_grad_norm(model))
        return value

    returned: Any = optimizer.step(closure)  # type: ignore[arg-type]  # torch types closures as returning float
    counter.charge_hvps(optimizer)
    if caps.needs_create_graph:
        optimizer.zero_grad(set_to_none=True)
    loss_value = float(returned.detach()) if isinstance(returned, Tensor) else (
        float(returned) if isinstance(returned, int | float) else None
    )
    return loss_value, (norm_holder[0] if norm_holder else None)


@lru_cache(maxsize=8)
def cached_workload(name: str, size: Size) -> Workload:
    """:func:`get_workload`, built once per process (workloads hold their data and no training state)."""
    return get_workload(name, size)


def run(spec: RunSpec, stop_at_target: bool = False) -> RunResult:
    """Run ``spec``: build the workload and the registry optimizer, train, and return the result.

    Raises:
        ValueError: unknown workload (listing the valid ones) or size.
        KeyError: unknown optimizer.
    """
    workload = cached_workload(spec.workload, spec.size)
    optimizer_info(spec.optimizer)  # fail fast on an unknown key, before any training
    return train(
        workload,
        lambda model: build_optimizer(spec.optimizer, workload, model, dict(spec.hyperparameters)),
        spec.seed,
        spec,
        max_steps=spec.max_steps,
        stop_at_target=stop_at_target,
    )
