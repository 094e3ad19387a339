"""Shared by the multi-process tests: a free loopback port, the gloo set-up, spawning ranks, comparing replicas."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_gloo(rank: int, world: int, port: int, timeout_s: float = 60.0) -> None:
    """Join a gloo process group on loopback, one thread per rank (the machine has 2 cores)."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )


def spawn_ranks(fn: Callable[..., None], world: int, outdir: Path, *args: Any) -> list[dict[str, Any]]:
    """Run ``fn(rank, world, port, outdir, *args)`` on ``world`` spawned ranks; load each ``rank{r}.pt``."""
    mp.spawn(fn, args=(world, free_port(), str(outdir), *args), nprocs=world, join=True)
    return [torch.load(outdir / f"rank{r}.pt", weights_only=False) for r in range(world)]


def assert_replicas_match(key: str, results: list[Any], reference: list[torch.Tensor], rtol: float = 1e-10) -> None:
    """Every rank's parameters are identical and equal ``reference`` (one process on the global batch).

    ``results`` holds each rank's parameter list, or the error string a rank recorded for ``key``.
    """
    assert not isinstance(results[0], str), f"{key} failed: {results[0]}"
    for other in results[1:]:
        for p0, p in zip(results[0], other, strict=True):
            assert torch.equal(p0, p), f"{key}: ranks differ"
    for p, ref in zip(results[0], reference, strict=True):
        torch.testing.assert_close(p, ref, rtol=rtol, atol=1e-13)
