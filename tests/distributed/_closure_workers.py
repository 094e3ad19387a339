"""Rank function for the closure-optimizer DDP tests (top level so torch.multiprocessing can pickle it).

Every rank trains each closure-driven optimizer (line searches, Polyak steps, zeroth-order methods)
under DDP on its shard of a fixed regression set, with and without
:func:`steepest.distributed.all_reduce_closure`, and saves the parameters to ``{outdir}/rank{rank}.pt``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import steepest
from steepest.distributed import all_reduce_closure
from steepest.optim._registry import REGISTRY
from tests.distributed._common import init_gloo

#: Optimizers that decide from the loss value or draw perturbations: they need the global loss.
KEYS = ("sls", "sls_adam", "ponos", "sps", "sps_max", "mdb", "mezo", "sparse_mezo", "zo_adam", "zo_sign_sgd")
#: Shown to diverge without the wrapper (the test's control).
UNWRAPPED_KEYS = ("sps", "mezo")
STEPS = 4
SHARD = 16


def data(world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch: ``world * SHARD`` rows of a fixed regression problem, float64."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(world * SHARD, 5, generator=g, dtype=torch.float64)
    y = torch.sin(x @ torch.randn(5, 1, generator=g, dtype=torch.float64)) + 0.1
    return x, y


def make_model() -> nn.Module:
    """The same float64 MLP on every rank and in the single-process reference."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 1)).to(torch.float64)


def train(key: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, wrap: bool) -> list[torch.Tensor]:
    """``STEPS`` closure steps of optimizer ``key`` on ``model`` (a DDP module or a plain one)."""
    opt = steepest.create_optimizer(key, list(model.parameters()), **REGISTRY[key].suggested)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        if torch.is_grad_enabled():
            loss.backward()
        return loss

    for _ in range(STEPS):
        opt.step(all_reduce_closure(closure) if wrap else closure)
    inner = model.module if isinstance(model, DDP) else model
    return [p.detach().clone() for p in inner.parameters()]


def run_all(rank: int, world: int, port: int, outdir: str) -> None:
    """Train every key under DDP on this rank's shard; save the parameters per key."""
    init_gloo(rank, world, port, timeout_s=60)
    x, y = data(world)
    shard = slice(rank * SHARD, (rank + 1) * SHARD)
    results: dict[str, Any] = {"wrapped": {}, "unwrapped": {}}
    try:
        for key in KEYS:
            results["wrapped"][key] = train(key, DDP(make_model()), x[shard], y[shard], wrap=True)
        for key in UNWRAPPED_KEYS:
            results["unwrapped"][key] = train(key, DDP(make_model()), x[shard], y[shard], wrap=False)
        torch.save(results, f"{outdir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
