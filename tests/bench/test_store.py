"""The result store: atomic runs, unique keys, and two writer processes losing nothing."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import text

from steepest.bench.runner import EvalPoint, RunResult, RunSpec
from steepest.bench.store import ResultStore


def fake_result(seed: int, n_evals: int = 5, status: str = "ok") -> RunResult:
    """A result with ``n_evals`` evaluation points, without training anything."""
    spec = RunSpec("least_squares", "tiny", "adamw", {"lr": 0.01, "betas": (0.9, 0.99)}, seed=seed)
    evals = [
        EvalPoint(
            step=10 * i, examples=320 * i, wall_time_s=0.01 * i, eval_time_s=0.001 * i, train_loss=1.0 / (i + 1),
            val_loss=1.0 / (i + 1), metric=1.0 / (i + 1), lr=0.01, step_size=None, grad_norm=None if i == 0 else 0.5,
            func_evals=10 * i, grad_evals=10 * i, state_bytes=132, peak_rss_bytes=10**8, metrics={"x": float(i)},
        )
        for i in range(n_evals)
    ]
    if status == "diverged":
        evals[-1].train_loss = float("nan")
        evals[-1].metric = float("inf")
    return RunResult(
        spec=spec, status=status, reached=status == "ok", target_metric="suboptimality", target_value=0.3,
        higher_is_better=False, steps_to_target=30 if status == "ok" else None, examples_to_target=None,
        grad_evals_to_target=30 if status == "ok" else None, func_evals_to_target=None,
        time_to_target_s=0.03 if status == "ok" else None, total_steps=10 * (n_evals - 1), wall_time_s=0.05,
        eval_time_s=0.005, final_metrics={"suboptimality": evals[-1].metric}, state_bytes=132,
        peak_rss_bytes=10**8, rss_at_start_bytes=9 * 10**7, peak_rss_scope="run", error=None,
        environment={"torch": "x"}, evals=evals,
    )


def test_add_is_atomic_and_ignores_duplicates(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "sub" / "r.db")  # a plain path is a SQLite file; folders are created
    assert store.add(fake_result(0)) is True
    assert store.add(fake_result(0)) is False  # same key: ignored, nothing changes
    assert store.add(fake_result(1, status="diverged")) is True
    rows = store.runs()
    assert [r.seed for r in rows] == [0, 1]
    assert [len(r.evals) for r in rows] == [5, 5]
    assert rows[0].hp == {"lr": 0.01, "betas": [0.9, 0.99]}
    assert rows[1].status == "diverged" and rows[1].evals[-1].train_loss is None  # NaN stored as NULL
    assert store.counts().by_status == {"ok": 1, "diverged": 1}
    assert store.done_keys() == {fake_result(0).spec.key(), fake_result(1).spec.key()}
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("SELECT count(*) FROM evals")).scalar() == 10


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = ResultStore(f"sqlite:///{tmp_path / 'r.db'}")
    bad = fake_result(0)
    bad.evals[2].metrics = {"x": object()}  # type: ignore[dict-item]  # fails at flush, after the run row
    with pytest.raises(TypeError):
        store.add(bad)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM evals")).scalar() == 0


def _writer(url: str, seeds: list[int], out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = ResultStore(url)
    stored = sum(store.add(fake_result(seed)) for seed in seeds)
    out.put(stored)


def test_two_processes_writing_lose_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    # fork: the writers start at once (they run no torch code, only SQLAlchemy); spawn where fork is missing
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    queue = ctx.Queue()
    # Writer A: seeds 0..39, writer B: 20..59 (20 overlapping keys both try to store).
    procs = [ctx.Process(target=_writer, args=(url, list(r), queue)) for r in (range(0, 40), range(20, 60))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    stored = [queue.get(timeout=5) for _ in procs]
    assert sum(stored) == 60  # each overlapping key stored by exactly one writer
    store = ResultStore(url)
    rows = store.runs()
    assert sorted(r.seed for r in rows) == list(range(60))
    assert all(len(r.evals) == 5 for r in rows)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM evals")).scalar() == 300
