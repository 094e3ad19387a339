"""The demo runs with the network blocked: nothing is downloaded at run time."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any, NoReturn

import pytest

from steepest.cli import main
from steepest.demo import run_demo


class NetworkBlocked(RuntimeError):
    pass


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise NetworkBlocked(f"network access attempted: {args!r}")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Block outgoing connections and name lookups; point scikit-learn's data cache at an empty dir."""
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse)
    data_home = tmp_path / "scikit_learn_data"
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(data_home))
    return data_home


def test_the_block_works(no_network: Path) -> None:
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("localhost", 80)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(NetworkBlocked):
            sock.connect(("127.0.0.1", 9))
        with pytest.raises(NetworkBlocked):
            sock.connect_ex(("127.0.0.1", 9))


@pytest.mark.timeout(300)
def test_demo_runs_offline(no_network: Path) -> None:
    result = run_demo("lion", epochs=2, seed=0, quiet=True)
    for run in result.runs:
        assert math.isfinite(run.train_loss) and math.isfinite(run.test_loss)
        assert run.test_accuracy > 0.2
    # The digits come from a file inside scikit-learn, not from (or into) a download cache.
    assert not no_network.exists() or not any(no_network.iterdir())


@pytest.mark.timeout(300)
def test_demo_command_runs_offline(no_network: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--optimizer", "lion", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "lion" in out and "adamw" in out
