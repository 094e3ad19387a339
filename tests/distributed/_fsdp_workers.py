"""Rank functions for the FSDP2 (``fully_shard``) matrix (top level so torch.multiprocessing can pickle them).

Every registered optimizer either trains under FSDP2 (DTensor parameters sharded across ranks) to the
same parameters as a single process on the global batch, or refuses at construction; the result per key
(full parameters, or where it failed and why) is saved to ``{outdir}/rank{rank}.pt``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

import steepest
from tests.distributed._common import init_gloo
from tests.distributed._ddp_workers import SHARD, STEPS, build, data, full_values, make_model, take_steps

#: Optimizers that refuse only their projected groups, run with defaults (no projection) as ``key/dense``.
DENSE_VARIANTS = ("galore_adamw/dense", "fira/dense", "frugal/dense")


def build_variant(key: str, model: nn.Module) -> torch.optim.Optimizer:
    """:func:`build` for a registry key; class defaults (unprojected) for a ``key/dense`` variant."""
    if key.endswith("/dense"):
        return steepest.create_optimizer(key.removesuffix("/dense"), model.parameters(), lr=1e-2)
    return build(key, model)


def train_variant(key: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """``STEPS`` steps of :func:`build_variant` on ``model`` (sharded or not); its full parameters."""
    take_steps(key.removesuffix("/dense"), build_variant(key, model), model, x, y, STEPS)
    return full_values(model)


def shard_model(model: nn.Module) -> nn.Module:
    """FSDP2 over each Linear and the root, parameters sharded on dim 0 across the world."""
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def run_all(rank: int, world: int, port: int, outdir: str, keys: list[str]) -> None:
    """Train every key under FSDP2 on this rank's shard; save the full parameters (or the error) per key."""
    init_gloo(rank, world, port, timeout_s=60)
    x, y = data(world)
    shard = slice(rank * SHARD, (rank + 1) * SHARD)
    results: dict[str, Any] = {}
    try:
        for key in keys:
            model = shard_model(make_model())
            try:
                opt = build_variant(key, model)
            except Exception as err:  # recorded, and reported by the test with the key
                results[key] = f"construction: {type(err).__name__}: {err}"
                continue
            try:
                take_steps(key.removesuffix("/dense"), opt, model, x[shard], y[shard], STEPS)
                results[key] = full_values(model)
            except Exception as err:
                results[key] = f"step: {type(err).__name__}: {err}"
        torch.save(results, f"{outdir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
