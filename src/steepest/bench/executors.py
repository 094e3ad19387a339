"""Where a sweep's runs execute: this process, a local pool of spawned processes, or Ray tasks.

Each executor yields :class:`RunResult` objects as runs finish; the sweep commits each one to the
store at once, so nothing finished is lost whatever stops the sweep.

* ``local`` (default): ``jobs=1`` runs in this process; ``jobs>1`` in a
  :class:`~concurrent.futures.ProcessPoolExecutor` of spawned workers.
* ``ray``: every run is one Ray task on the cluster at ``address`` (``"auto"``: the one
  ``ray start`` left on this machine; ``"host:port"``; ``"local"``: a private one-machine
  cluster), asking for ``threads`` CPUs. At most twice the cluster's task slots are queued at a
  time, so an interrupted sweep leaves little queued work. A task whose worker process dies is
  retried by Ray (:data:`RAY_MAX_RETRIES`); a run that raises is not (it is recorded as failed
  by the runner, as locally). With a server database as the store (``postgresql://...``), each
  task also writes its own result before returning, so a finished run survives even a driver
  that dies before collecting it; the store ignores the driver's second insert of the same key.
  A SQLite store is written by the driver only: a path on the driver's machine means nothing on
  another node.
"""

from __future__ import annotations

import multiprocessing
import socket
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Literal

import torch

from steepest._extras import install_hint, require
from steepest.bench.runner import RunResult, RunSpec, run

#: The executors ``steepest bench run --executor`` accepts.
Executor = Literal["local", "ray"]
EXECUTORS: tuple[Executor, ...] = ("local", "ray")
class ExecutorError(RuntimeError):
    """The executor cannot start: Ray missing, or no cluster at the given address."""


#: Times Ray re-runs a task whose worker process died (a killed or crashed worker, a lost node).
RAY_MAX_RETRIES = 3


def run_spec(spec: RunSpec, stop_at_target: bool = True, threads: int | None = None) -> RunResult:
    """Run one spec with ``threads`` torch threads; what every executor's workers execute."""
    if threads is not None:
        torch.set_num_threads(threads)
    return run(spec, stop_at_target=stop_at_target)


def local_results(todo: list[RunSpec], stop_at_target: bool, threads: int, jobs: int) -> Iterator[RunResult]:
    """Run ``todo`` here (``jobs=1``) or in ``jobs`` spawned processes; yield results as they finish."""
    if jobs <= 1:
        for spec in todo:
            yield run_spec(spec, stop_at_target, threads)
        return
    context = multiprocessing.get_context("spawn")  # fork after torch threads have started can deadlock
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    try:
        pending: set[Future[RunResult]] = set()
        queue = list(reversed(todo))
        while queue or pending:
            while queue and len(pending) < 2 * jobs:  # submit lazily so an interrupt leaves little queued work
                pending.add(pool.submit(run_spec, queue.pop(), stop_at_target, threads))
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        # On Ctrl-C or an error, drop queued runs instead of waiting for them; finished ones are stored.
        pool.shutdown(wait=True, cancel_futures=True)


def uses_server_database(store_url: str) -> bool:
    """Whether ``store_url`` names a database server (reachable from other machines), not a SQLite file."""
    if "://" not in store_url:
        return False
    make_url = require("sqlalchemy.engine", "the benchmark's result store").make_url
    return make_url(store_url).get_backend_name() != "sqlite"


def ray_task(spec: RunSpec, stop_at_target: bool, threads: int, store_url: str | None, sweep: str) -> RunResult:
    """One run as a Ray task; with a server ``store_url`` it stores its own result before returning."""
    result = run_spec(spec, stop_at_target, threads)
    if store_url is not None:
        from steepest.bench.store import ResultStore

        store = ResultStore(store_url)
        try:
            store.add(result, sweep=sweep)
        finally:
            store.close()
    return result


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast when ``address`` is ``host:port`` and nothing listens there (``ray.init`` retries for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" / "local": ray.init itself says when there is no cluster
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ExecutorError(f"executor 'ray': no Ray cluster at {address!r} ({err})") from None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError(f"executor 'ray' needs Ray: {install_hint('ray')}") from None
    return ray


def ray_results(
    todo: list[RunSpec],
    stop_at_target: bool,
    threads: int,
    address: str,
    store_url: str,
    sweep: str,
) -> Iterator[RunResult]:
    """Run each spec of ``todo`` as a Ray task on the cluster at ``address``; yield results as they finish.

    Raises:
        ExecutorError: Ray is not installed, or no cluster answers at ``address``.
    """
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        _check_reachable(address)
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     logging_level="WARNING", log_to_driver=False)
        except ConnectionError as err:
            raise ExecutorError(f"executor 'ray': no Ray cluster at {address!r} ({err})") from None
    remote = ray.remote(ray_task).options(num_cpus=threads, max_retries=RAY_MAX_RETRIES, retry_exceptions=False)
    shared_url = store_url if uses_server_database(store_url) else None
    slots = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
    pending: list[Any] = []
    queue = list(reversed(todo))
    try:
        while queue or pending:
            while queue and len(pending) < 2 * slots:
                pending.append(remote.remote(queue.pop(), stop_at_target, threads, shared_url, sweep))
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield ray.get(ref)
    finally:
        for ref in pending:  # an interrupted sweep: drop queued and running runs (finished ones are stored)
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
