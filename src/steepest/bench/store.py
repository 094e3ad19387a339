"""The result store: every finished run, with its evaluation curve, in one SQL database.

SQLite file by default; any SQLAlchemy URL (``postgresql://...``) lets several machines share one store. A run
and its evaluation points are written in one transaction, so a sweep killed at any moment leaves only whole runs.
Runs are identified by :meth:`RunSpec.key` (workload, size, optimizer, hyperparameters, seed, study, trial,
budget override, library version), unique in the ``runs`` table: a resumed sweep skips the keys already there,
and two processes that finish the same run store it once (the second insert is ignored). SQLite files are
opened in WAL mode with a busy timeout so concurrent writers wait instead of failing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steepest._extras import missing

try:
    from sqlalchemy import (
        JSON,
        Boolean,
        Engine,
        Float,
        ForeignKey,
        Integer,
        String,
        Text,
        create_engine,
        event,
        select,
    )
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload
except ModuleNotFoundError as err:  # the bench extra
    if err.name != "sqlalchemy":
        raise
    raise missing("sqlalchemy", "the benchmark's result store") from err

from steepest.bench.runner import EvalPoint, RunResult

#: Seconds a SQLite writer waits for the lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 60.0


class _Base(DeclarativeBase):
    pass


class RunRow(_Base):
    """One finished run (table ``runs``)."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_key: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    sweep: Mapped[str] = mapped_column(String(200), default="", index=True)
    workload: Mapped[str] = mapped_column(String(100), index=True)
    size: Mapped[str] = mapped_column(String(20))
    optimizer: Mapped[str] = mapped_column(String(100), index=True)
    hyperparameters: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(Integer)
    study: Mapped[int] = mapped_column(Integer, default=0)
    trial: Mapped[int] = mapped_column(Integer, default=0)
    max_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20))
    reached: Mapped[bool] = mapped_column(Boolean)
    target_metric: Mapped[str] = mapped_column(String(100))
    target_value: Mapped[float] = mapped_column(Float)
    higher_is_better: Mapped[bool] = mapped_column(Boolean)
    steps_to_target: Mapped[int | None] = mapped_column(Integer, nullable=True)
    examples_to_target: Mapped[int | None] = mapped_column(Integer, nullable=True)
    grad_evals_to_target: Mapped[int | None] = mapped_column(Integer, nullable=True)
    func_evals_to_target: Mapped[int | None] = mapped_column(Integer, nullable=True)
    time_to_target_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    total_steps: Mapped[int] = mapped_column(Integer)
    wall_time_s: Mapped[float] = mapped_column(Float)
    eval_time_s: Mapped[float] = mapped_column(Float)
    final_metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    state_bytes: Mapped[int] = mapped_column(Integer)
    peak_rss_bytes: Mapped[int] = mapped_column(Integer)
    rss_at_start_bytes: Mapped[int] = mapped_column(Integer)
    peak_rss_scope: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    environment: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    evals: Mapped[list[EvalRow]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="EvalRow.step"
    )

    @property
    def hp(self) -> dict[str, Any]:
        """The hyperparameters, decoded."""
        value: dict[str, Any] = json.loads(self.hyperparameters)
        return value


class EvalRow(_Base):
    """One evaluation point of a run (table ``evals``)."""

    __tablename__ = "evals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    examples: Mapped[int] = mapped_column(Integer)
    wall_time_s: Mapped[float] = mapped_column(Float)
    eval_time_s: Mapped[float] = mapped_column(Float)
    train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    metric: Mapped[float | None] = mapped_column(Float, nullable=True)
    lr: Mapped[float | None] = mapped_column(Float, nullable=True)
    step_size: Mapped[float | None] = mapped_column(Float, nullable=True)
    grad_norm: Mapped[float | None] = mapped_column(Float, nullable=True)
    func_evals: Mapped[int] = mapped_column(Integer)
    grad_evals: Mapped[int] = mapped_column(Integer)
    state_bytes: Mapped[int] = mapped_column(Integer)
    peak_rss_bytes: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    run: Mapped[RunRow] = relationship(back_populates="evals")


def _finite_or_none(value: float | None) -> float | None:
    # NaN/inf do not survive every SQL backend (nor JSON); a diverged value is stored as NULL.
    return value if value is not None and math.isfinite(value) else None


def _clean(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: _finite_or_none(v) for k, v in metrics.items()}


@dataclass(frozen=True)
class StoreCounts:
    """How many runs a store holds, by status."""

    total: int
    by_status: dict[str, int]


class ResultStore:
    """A result store at a SQLAlchemy URL, or a path (taken as a SQLite file).

    Example:
        >>> store = ResultStore("sqlite://")  # in memory
        >>> store.done_keys()
        set()
    """

    def __init__(self, url: str | Path) -> None:
        text = str(url)
        if "://" not in text:
            text = f"sqlite:///{Path(text).expanduser()}"
        parsed = make_url(text)
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_S
        self.url = text
        self.engine: Engine = create_engine(text, connect_args=connect_args)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        _create_schema(self.engine)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def add(self, result: RunResult, sweep: str = "") -> bool:
        """Store ``result`` and its evaluation points in one transaction.

        Returns:
            ``True`` if stored, ``False`` if a run with the same key was already there (nothing changes).
        """
        spec = result.spec
        row = RunRow(
            run_key=spec.key(),
            sweep=sweep,
            workload=spec.workload,
            size=spec.size,
            optimizer=spec.optimizer,
            hyperparameters=spec.hyperparameters_json(),
            seed=spec.seed,
            study=spec.study,
            trial=spec.trial,
            max_steps=spec.max_steps,
            version=spec.version,
            status=result.status,
            reached=result.reached,
            target_metric=result.target_metric,
            target_value=result.target_value,
            higher_is_better=result.higher_is_better,
            steps_to_target=result.steps_to_target,
            examples_to_target=result.examples_to_target,
            grad_evals_to_target=result.grad_evals_to_target,
            func_evals_to_target=result.func_evals_to_target,
            time_to_target_s=result.time_to_target_s,
            total_steps=result.total_steps,
            wall_time_s=result.wall_time_s,
            eval_time_s=result.eval_time_s,
            final_metrics=_clean(result.final_metrics),
            state_bytes=result.state_bytes,
            peak_rss_bytes=result.peak_rss_bytes,
            rss_at_start_bytes=result.rss_at_start_bytes,
            peak_rss_scope=result.peak_rss_scope,
            error=result.error,
            environment=result.environment,
            created_at=time.time(),
            evals=[_eval_row(p) for p in result.evals],
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(row)
        except IntegrityError:
            if spec.key() in self.done_keys([spec.key()]):
                return False
            raise
        return True

    def done_keys(self, keys: Iterable[str] | None = None) -> set[str]:
        """Keys of the stored runs (all, or those among ``keys``)."""
        with Session(self.engine) as session:
            query = select(RunRow.run_key)
            if keys is not None:
                wanted = list(keys)
                found: set[str] = set()
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start : start + 500]
                    found.update(session.scalars(query.where(RunRow.run_key.in_(chunk))))
                return found
            return set(session.scalars(query))

    def runs(
        self,
        workloads: Sequence[str] | None = None,
        optimizers: Sequence[str] | None = None,
        sweep: str | None = None,
        with_evals: bool = True,
    ) -> list[RunRow]:
        """Stored runs, optionally filtered, with their evaluation points loaded (detached from the session)."""
        query = select(RunRow).order_by(RunRow.workload, RunRow.optimizer, RunRow.study, RunRow.trial, RunRow.seed)
        if workloads:
            query = query.where(RunRow.workload.in_(list(workloads)))
        if optimizers:
            query = query.where(RunRow.optimizer.in_(list(optimizers)))
        if sweep is not None:
            query = query.where(RunRow.sweep == sweep)
        if with_evals:
            query = query.options(selectinload(RunRow.evals))
        with Session(self.engine, expire_on_commit=False) as session:
            rows = list(session.scalars(query))
            session.expunge_all()
        return rows

    def counts(self) -> StoreCounts:
        """Number of runs, total and per status."""
        by_status: dict[str, int] = {}
        for row in self.runs(with_evals=False):
            by_status[row.status] = by_status.get(row.status, 0) + 1
        return StoreCounts(sum(by_status.values()), by_status)


def _eval_row(point: EvalPoint) -> EvalRow:
    return EvalRow(
        step=point.step,
        examples=point.examples,
        wall_time_s=point.wall_time_s,
        eval_time_s=point.eval_time_s,
        train_loss=_finite_or_none(point.train_loss),
        val_loss=_finite_or_none(point.val_loss),
        metric=_finite_or_none(point.metric),
        lr=_finite_or_none(point.lr),
        step_size=_finite_or_none(point.step_size),
        grad_norm=_finite_or_none(point.grad_norm),
        func_evals=point.func_evals,
        grad_evals=point.grad_evals,
        state_bytes=point.state_bytes,
        peak_rss_bytes=point.peak_rss_bytes,
        metrics=_clean(point.metrics),
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed run survives a killed process (only a power loss may drop the last commits).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _create_schema(engine: Engine) -> None:
    # Two processes opening a fresh store at once may both try to create the tables; the loser retries.
    for attempt in range(5):
        try:
            _Base.metadata.create_all(engine)
            return
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
