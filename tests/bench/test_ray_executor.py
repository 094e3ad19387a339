"""``steepest bench run --executor ray`` against a Ray cluster the test starts on loopback.

The cluster is ``ray start --head --block`` in its own process group (stopped by killing that group,
so a user's own Ray cluster is left alone). A sweep of 2 optimizers x 2 tiny workloads lands in the
store; a sweep whose Ray worker is killed with SIGKILL mid-run still stores every run (Ray re-runs
the lost task, the store keeps the runs that had finished).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from steepest.bench.config import ConfigError, config_from_dict
from steepest.bench.executors import ray_task, uses_server_database
from steepest.bench.runner import RunSpec
from steepest.bench.store import ResultStore
from tests.distributed._common import free_port

STEEPEST = [sys.executable, "-m", "steepest"]
RAY = str(Path(sys.executable).with_name("ray"))  # the ray command installed beside this Python


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([RAY, "status", f"--address={address}"], capture_output=True, env=env).returncode:
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the Ray head did not come up within 60 s"
            time.sleep(1)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def sweep_command(address: str, store: Path, *extra: str) -> list[str]:
    return [*STEEPEST, "bench", "run", "--size", "tiny", "-w", "least_squares", "-w", "test_functions_2d",
            "-o", "adamw", "-o", "lion", "--seeds", "0", "--executor", "ray", "--address", address,
            "--store", str(store), "--no-progress", *extra]


def stored_runs(store: Path) -> list[tuple[str, str, int, str]]:
    with sqlite3.connect(store) as db:
        return sorted(db.execute("select workload, optimizer, seed, status from runs").fetchall())


def ray_task_pids() -> list[int]:
    """Processes executing a :func:`ray_task` (Ray titles a busy worker ``ray::<function>``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::ray_task"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_ray_sweep_lands_in_the_store(ray_address: str, tmp_path: Path) -> None:
    store = tmp_path / "results.db"
    done = subprocess.run(sweep_command(ray_address, store), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = stored_runs(store)
    assert [(w, o) for w, o, _, _ in runs] == [
        ("least_squares", "adamw"), ("least_squares", "lion"),
        ("test_functions_2d", "adamw"), ("test_functions_2d", "lion"),
    ]
    assert all(status == "ok" for *_, status in runs), runs
    again = subprocess.run(sweep_command(ray_address, store), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "4 already stored, 0 run now" in again.stdout, again.stdout


def test_killing_a_ray_worker_mid_run_loses_no_run(ray_address: str, tmp_path: Path) -> None:
    store = tmp_path / "results.db"
    # A 6000-step budget: the AdamW runs take seconds, so that a worker is busy when it is killed.
    sweep = subprocess.Popen(
        sweep_command(ray_address, store, "--seeds", "0", "1", "--budget", "6000"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and sweep.poll() is None and time.monotonic() < deadline:
        pids = ray_task_pids()
        if pids:
            time.sleep(1.0)  # let it get into the run
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    out, err = sweep.communicate(timeout=600)
    assert killed is not None, "no Ray worker was seen running a task"
    assert sweep.returncode == 0, err[-3000:]
    runs = stored_runs(store)
    assert len(runs) == 8 and all(status == "ok" for *_, status in runs), runs
    assert "8 run now" in out, out


def test_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    done = subprocess.run(sweep_command(f"127.0.0.1:{port}", tmp_path / "r.db"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert "no Ray cluster at" in done.stderr, done.stderr[-2000:]


def test_a_ray_task_stores_its_own_result_given_a_store_url(tmp_path: Path) -> None:
    """What each task does with a server store (``postgresql://``): stored before the driver sees it."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    spec = RunSpec(workload="test_functions_2d", size="tiny", optimizer="adamw", hyperparameters={"lr": 0.05}, seed=0)
    result = ray_task(spec, True, 1, url, "shared")
    store = ResultStore(url)
    try:
        assert store.done_keys([spec.key()]) == {spec.key()}
        assert store.add(result, sweep="shared") is False  # the driver's second insert changes nothing
    finally:
        store.close()
    assert uses_server_database("postgresql://bench@db.example/steepest")
    assert not uses_server_database("bench-results/results.db") and not uses_server_database(url)


def test_the_executor_is_checked_in_configs() -> None:
    base = {"workloads": ["least_squares"], "optimizers": ["adamw"]}
    assert config_from_dict({**base, "executor": "ray", "address": "10.0.0.5:6379"}).address == "10.0.0.5:6379"
    with pytest.raises(ConfigError, match="executor must be one of local, ray, got 'slurm'"):
        config_from_dict({**base, "executor": "slurm"})
