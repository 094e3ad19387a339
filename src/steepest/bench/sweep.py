"""Run a sweep: expand a :class:`SweepConfig` into run specs, skip what the store has, run the rest.

Runs execute in this process (``jobs=1``) or in a local pool of ``jobs`` fresh (spawned) worker processes; each
finished run is committed to the store at once, by this process, in one transaction, so a sweep killed at any
point resumes where it stopped (already-stored keys are skipped) with nothing lost or duplicated.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

import torch

from steepest.bench.config import SweepConfig
from steepest.bench.runner import RunResult, RunSpec, run
from steepest.bench.store import ResultStore
from steepest.bench.tuning import defaults_specs, external_tuning_specs


def expand(config: SweepConfig, workloads: list[str] | None = None) -> list[RunSpec]:
    """Every run of the sweep, in order workload, optimizer, study, trial (names are not checked here)."""
    specs: list[RunSpec] = []
    for workload in workloads if workloads is not None else config.workloads:
        for optimizer in config.optimizers:
            fixed = config.hyperparameters.get(optimizer, {})
            if config.mode == "defaults":
                specs += defaults_specs(workload, config.size, optimizer, config.seeds, fixed, config.max_steps)
            else:
                specs += external_tuning_specs(
                    workload,
                    config.size,
                    optimizer,
                    config.trials,
                    config.studies,
                    base_seed=config.seeds[0],
                    fixed=fixed,
                    max_steps=config.max_steps,
                )
    return specs


def run_spec(spec: RunSpec, stop_at_target: bool = True, threads: int | None = None) -> RunResult:
    """Run one spec with ``threads`` torch threads; what the pool's workers execute."""
    if threads is not None:
        torch.set_num_threads(threads)
    return run(spec, stop_at_target=stop_at_target)


@dataclass
class SweepSummary:
    """What a sweep did: runs planned, already done (skipped), run now, and their statuses."""

    planned: int
    skipped: int
    ran: int
    statuses: dict[str, int]


def _results(
    todo: list[RunSpec], stop_at_target: bool, threads: int, jobs: int
) -> Iterator[RunResult]:
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


def run_sweep(
    config: SweepConfig,
    store: ResultStore,
    progress: bool = True,
    on_result: Callable[[RunResult], None] | None = None,
) -> SweepSummary:
    """Run every spec of ``config`` not yet in ``store``; commit each result as it finishes.

    Raises:
        ConfigError: unknown workload or optimizer names (listing the valid ones), before anything runs.
    """
    config.check_names(dry_run=False)
    specs = expand(config)
    done = store.done_keys([s.key() for s in specs])
    todo = [s for s in specs if s.key() not in done]
    statuses: dict[str, int] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc=f"bench {config.name}", unit="run",
                   file=sys.stderr, dynamic_ncols=True)
    try:
        for result in _results(todo, config.stop_at_target, config.threads, config.jobs):
            store.add(result, sweep=config.name)
            statuses[result.status] = statuses.get(result.status, 0) + 1
            if on_result is not None:
                on_result(result)
            if bar is not None:
                bar.set_postfix_str(f"{result.spec.workload} {result.spec.optimizer} {result.status}", refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return SweepSummary(len(specs), len(specs) - len(todo), len(todo), statuses)
