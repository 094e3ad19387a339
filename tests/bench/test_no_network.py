"""The runner, the sweep and the built-in synthetic workloads never touch the network."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, NoReturn

import pytest

from steepest.bench.config import config_from_dict
from steepest.bench.runner import RunSpec, run
from steepest.bench.store import ResultStore
from steepest.bench.sweep import run_sweep


class NetworkBlocked(RuntimeError):
    pass


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise NetworkBlocked(f"network access attempted: {args!r}")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse)


def test_block_is_effective(no_network: None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkBlocked):
        sock.connect(("127.0.0.1", 9))


@pytest.mark.parametrize("workload", ["least_squares", "test_functions_2d"])
def test_runs_offline(no_network: None, workload: str, tmp_path: Path) -> None:
    from steepest.bench import runner

    runner.cached_workload.cache_clear()  # build the data under the block
    result = run(RunSpec(workload, "tiny", "adamw", {"lr": 0.05}, max_steps=20))
    assert result.status == "ok" and len(result.evals) >= 2
    config = config_from_dict({"size": "tiny", "workloads": [workload], "optimizers": ["sgd"], "max_steps": 10,
                               "output": {"store": str(tmp_path / "r.db")}})
    summary = run_sweep(config, ResultStore(config.store), progress=False)
    assert summary.ran == 1
