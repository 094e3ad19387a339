"""Shared by the multi-process tests: a free loopback port and the gloo process group set-up."""

from __future__ import annotations

import socket
from datetime import timedelta

import torch
import torch.distributed as dist


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
