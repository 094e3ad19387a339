"""End to end on tiny sizes: a sweep is killed mid-way (a real SIGKILL), resumes, and the report renders."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from steepest.bench.config import load_config
from steepest.bench.store import ResultStore
from steepest.bench.sweep import expand
from steepest.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(
        f"""
name = "e2e"
size = "tiny"
workloads = ["least_squares", "test_functions_2d"]
optimizers = ["adamw", "sgd", "sign_sgd"]
seeds = [0, 1]
stop_at_target = false
threads = 1
[hyperparameters.adamw]
lr = 0.05
[output]
store = "{tmp_path / 'results.db'}"
report = "{tmp_path / 'report'}"
"""
    )
    return cfg


def _count(store: ResultStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM runs")).scalar_one())


@pytest.mark.timeout(240)
def test_killed_sweep_resumes_without_loss_or_duplicates_and_report_renders(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    config = load_config(cfg)
    expected = {s.key(): s for s in expand(config)}
    assert len(expected) == 12  # 3 optimizers x 2 workloads x 2 seeds

    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "steepest", "bench", "run", "--config", str(cfg), "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    store = ResultStore(config.store)
    deadline = time.monotonic() + 180
    try:
        while _count(store) < 2:
            assert proc.poll() is None, f"sweep ended before it could be killed: {proc.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no run landed in time"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    at_kill = _count(store)
    assert 2 <= at_kill < 12, at_kill  # killed midway

    # Resume: only the missing runs execute.
    assert main(["bench", "run", "--config", str(cfg), "--no-progress"]) == 0
    rows = store.runs()
    keys = [r.run_key for r in rows]
    assert sorted(keys) == sorted(expected)  # nothing lost, nothing duplicated
    with store.engine.connect() as conn:
        orphans = conn.execute(text("SELECT count(*) FROM evals WHERE run_id NOT IN (SELECT id FROM runs)"))
        assert orphans.scalar_one() == 0
    for row in rows:  # every stored run is whole: its evaluations run from step 0 to where it stopped
        steps = [e.step for e in row.evals]
        assert steps[0] == 0 and steps[-1] == row.total_steps and len(steps) == len(set(steps))
    statuses = {(r.workload, r.optimizer): r.status for r in rows}
    assert statuses[("test_functions_2d", "sgd")] == "diverged"  # lr 0.1 on these functions blows up
    assert statuses[("least_squares", "adamw")] == "ok"

    # A second resume runs nothing.
    assert main(["bench", "run", "--config", str(cfg), "--no-progress"]) == 0
    assert _count(store) == 12

    assert main(["bench", "report", "--config", str(cfg)]) == 0
    report = tmp_path / "report"
    page = (report / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 6
    for name in images:
        assert (report / name).is_file() and (report / name).stat().st_size > 1000, name
    pngs = {p.name for p in report.glob("*.png")}
    assert pngs == set(images)
    assert {"performance_profiles.png", "memory_vs_time.png", "curves_least_squares.png",
            "groups_test_functions_2d.png", "time_to_target.png"} <= pngs
    summary = (report / "summary.md").read_text()
    assert "| least_squares | adamw | 2/2 |" in summary
    assert "| test_functions_2d | sgd | 0/2 (2 failed) |" in summary


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_process_pool_sweep_matches_in_process_sweep(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    pooled = tmp_path / "pooled.db"
    assert main(["bench", "run", "--config", str(cfg), "--no-progress", "-w", "least_squares", "--jobs", "2",
                 "--store", str(pooled)]) == 0
    assert main(["bench", "run", "--config", str(cfg), "--no-progress", "-w", "least_squares"]) == 0
    by_key = {r.run_key: r for r in ResultStore(pooled).runs()}
    serial = ResultStore(tmp_path / "results.db").runs()
    assert len(by_key) == len(serial) == 6
    for row in serial:  # deterministic: a worker process reproduces the in-process run exactly
        other = by_key[row.run_key]
        assert [e.train_loss for e in other.evals] == [e.train_loss for e in row.evals]
        # f* comes from a float64 lstsq per process; it may differ in the last bit between processes
        assert [e.metric for e in other.evals] == pytest.approx([e.metric for e in row.evals], rel=1e-12)
        assert other.grad_evals_to_target == row.grad_evals_to_target
