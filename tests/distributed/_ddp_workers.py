"""Rank function for the DDP equivalence matrix (top level so torch.multiprocessing can pickle it).

Each rank trains every registered optimizer under DDP for a few steps on its shard of a fixed global
batch (closure optimizers through :func:`steepest.distributed.all_reduce_closure`) and saves the final
parameters to ``{outdir}/rank{rank}.pt``; the test compares them with a single process on the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import steepest
from steepest.distributed import all_reduce_closure, data_parallel_curvature
from steepest.optim._base import SteepestOptimizer
from steepest.optim._registry import REGISTRY
from tests.distributed._common import init_gloo

STEPS = 3
SHARD = 8


def data(world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch: ``world * SHARD`` rows of a fixed regression problem, float64."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(world * SHARD, 6, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(6, 2, generator=g, dtype=torch.float64))
    return x, y


def make_model() -> nn.Module:
    """The same float64 MLP everywhere (seeded: the optimizers' own draws follow the same RNG state)."""
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)).to(torch.float64)


#: Hessian-vector-product optimizers: DDP cannot wrap them; they average over ranks themselves.
CURVATURE = frozenset({"adahessian", "sophia_h", "newton_cg"})


def build(key: str, model: nn.Module) -> torch.optim.Optimizer:
    """Optimizer ``key`` for ``model`` with its suggested hyperparameters.

    Curvature optimizers get :func:`steepest.distributed.data_parallel_curvature` (a no-op on one process).
    """
    entry = REGISTRY[key]
    params, extra = steepest.optimizer_params(key, model)
    opt = steepest.create_optimizer(key, params, **{**entry.suggested, **extra})
    if key in CURVATURE:
        data_parallel_curvature(opt)
    return opt


def data_parallel(key: str, model: nn.Module) -> nn.Module:
    """The module each rank runs forward through for optimizer ``key`` (as steepest.distributed documents).

    ``DDP(model)``; BlockLLM with ``find_unused_parameters=True`` (its unselected tensors are frozen);
    the model itself for the curvature optimizers (they average over ranks themselves).
    """
    if key in CURVATURE:
        return model
    return DDP(model, find_unused_parameters=key == "blockllm")


def take_steps(
    key: str, opt: torch.optim.Optimizer, forward: nn.Module, x: torch.Tensor, y: torch.Tensor, n: int
) -> None:
    """``n`` steps as the optimizer's capabilities ask (closure optimizers see the global-batch loss)."""
    caps = REGISTRY[key].capabilities

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(forward(x), y)
        if torch.is_grad_enabled():
            loss.backward(create_graph=caps.needs_create_graph)
        return loss

    for _ in range(n):
        if caps.requires_closure or caps.gradient_free:
            opt.step(all_reduce_closure(closure))
        else:
            with torch.enable_grad():
                closure()
            opt.step()


def train(key: str, model: nn.Module, ddp: nn.Module | None, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """``STEPS`` steps of optimizer ``key`` on ``model``, through ``ddp`` when given."""
    take_steps(key, build(key, model), ddp if ddp is not None else model, x, y, STEPS)
    return [p.detach().clone() for p in model.parameters()]


def run_all(rank: int, world: int, port: int, outdir: str, keys: list[str], plain_keys: list[str]) -> None:
    """Train every key data-parallel on this rank's shard; save the parameters (or the error) per key.

    ``keys`` run as :func:`data_parallel` says; ``plain_keys`` also run through a plain ``DDP(model)``
    (their error, or their parameters, saved under ``"plain:" + key``).
    """
    init_gloo(rank, world, port, timeout_s=60)
    x, y = data(world)
    shard = slice(rank * SHARD, (rank + 1) * SHARD)
    results: dict[str, Any] = {}
    runs = [(key, key, data_parallel) for key in keys]
    runs += [(f"plain:{key}", key, lambda _key, model: DDP(model)) for key in plain_keys]
    try:
        for name, key, forward in runs:
            model = make_model()
            try:
                results[name] = train(key, model, forward(key, model), x[shard], y[shard])
            except Exception as err:  # recorded, and reported by the test with the key
                results[name] = f"{type(err).__name__}: {err}"
        torch.save(results, f"{outdir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def rank_dies(rank: int, world: int, port: int, outdir: str) -> None:
    """Rank 1 exits abruptly after 2 steps; rank 0 records what its next step raises, and when."""
    import os
    import time

    init_gloo(rank, world, port, timeout_s=10)
    x, y = data(world)
    shard = slice(rank * SHARD, (rank + 1) * SHARD)
    model = make_model()
    ddp = DDP(model)
    opt = steepest.create_optimizer("lion", model.parameters(), lr=1e-3)
    outcome: dict[str, Any] = {"steps": 0, "error": None}
    start = time.monotonic()
    try:
        for step in range(6):
            if rank == 1 and step == 2:
                os._exit(0)  # a crash without any goodbye to the process group
            opt.zero_grad()
            nn.functional.mse_loss(ddp(x[shard]), y[shard]).backward()
            opt.step()
            outcome["steps"] += 1
    except Exception as err:  # the documented behaviour: the surviving rank's collective raises
        outcome["error"] = f"{type(err).__name__}: {err}"
    outcome["seconds"] = time.monotonic() - start
    torch.save(outcome, f"{outdir}/rank{rank}.pt")


def wrap(key: str, model: nn.Module, engine: str) -> nn.Module:
    """The module to run forward through: :func:`data_parallel`, or ``model`` itself sharded by FSDP2."""
    if engine == "ddp":
        return data_parallel(key, model)
    if engine == "fsdp2":
        from tests.distributed._fsdp_workers import shard_model

        return shard_model(model)
    raise ValueError(f"unknown engine {engine!r}")


def full_values(model: nn.Module) -> list[torch.Tensor]:
    """Every parameter's full value (FSDP2's DTensor shards gathered), detached copies."""
    return [
        (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()  # type: ignore[operator]
        for p in model.parameters()
    ]


def checkpoint_round_trip(key: str, rank: int, world: int, outdir: str, engine: str = "ddp") -> str | None:
    """Save after 2 steps with torch.distributed.checkpoint, resume fresh, compare 2 more steps.

    ``engine`` is ``"ddp"`` or ``"fsdp2"``. The reference is 4 uninterrupted steps. Returns None
    when they agree bitwise, else why not.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    x, y = data(world)
    shard = slice(rank * SHARD, (rank + 1) * SHARD)

    def fresh() -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
        model = make_model()
        forward = wrap(key, model, engine)
        return model, forward, build(key, model)

    def run(forward: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
        take_steps(key, opt, forward, x[shard], y[shard], steps)

    model, forward, opt = fresh()
    run(forward, opt, 2)
    model_sd, optim_sd = get_state_dict(model, opt)
    path = f"{outdir}/dcp_{engine}_{key}"
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
    run(forward, opt, 2)
    expected = full_values(model)

    model2, forward2, opt2 = fresh()
    if isinstance(opt2, SteepestOptimizer):
        # get_state_dict would create the state by calling step() without a closure, which closure
        # and Hessian-vector-product optimizers refuse: init_state() creates it without a step.
        opt2.init_state()
    model_sd2, optim_sd2 = get_state_dict(model2, opt2)
    state = {"model": model_sd2, "optim": optim_sd2}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model2, opt2, model_state_dict=state["model"], optim_state_dict=state["optim"])
    run(forward2, opt2, 2)
    for p, e in zip(full_values(model2), expected, strict=True):
        if not torch.equal(p, e):
            return f"differs by {float((p - e).abs().max()):.3g}"
    return None


def run_checkpoints(rank: int, world: int, port: int, outdir: str, keys: list[str], engine: str = "ddp") -> None:
    """:func:`checkpoint_round_trip` for every key under ``engine``; saves key -> None or the failure."""
    init_gloo(rank, world, port, timeout_s=60)
    results: dict[str, Any] = {}
    try:
        for key in keys:
            try:
                results[key] = checkpoint_round_trip(key, rank, world, outdir, engine)
            except Exception as err:
                results[key] = f"raised {type(err).__name__}: {str(err)[:300]}"
        torch.save(results, f"{outdir}/ckpt_rank{rank}.pt")
    finally:
        dist.destroy_process_group()
