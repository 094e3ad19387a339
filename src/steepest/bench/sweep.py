"""Run a sweep: expand a :class:`SweepConfig` into run specs, skip what the store has, run the rest.

Runs execute in this process (``jobs=1``), in a local pool of ``jobs`` fresh (spawned) worker processes, or as
Ray tasks (``executor="ray"``, see :mod:`steepest.bench.executors`); each finished run is committed to the store
at once, by this process, in one transaction, so a sweep killed at any point resumes where it stopped
(already-stored keys are skipped) with nothing lost or duplicated.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from steepest._extras import require
from steepest.bench.config import SweepConfig
from steepest.bench.executors import local_results, ray_results
from steepest.bench.runner import RunResult, RunSpec
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


@dataclass
class SweepSummary:
    """What a sweep did: runs planned, already done (skipped), run now, and their statuses."""

    planned: int
    skipped: int
    ran: int
    statuses: dict[str, int]


def _results(config: SweepConfig, todo: list[RunSpec], store: ResultStore) -> Iterator[RunResult]:
    if config.executor == "ray":
        return ray_results(todo, config.stop_at_target, config.threads, config.address, store.url, config.name)
    return local_results(todo, config.stop_at_target, config.threads, config.jobs)


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
        tqdm = require("tqdm", "the benchmark's progress bar (or --no-progress)").tqdm
        bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc=f"bench {config.name}", unit="run",
                   file=sys.stderr, dynamic_ncols=True)
    try:
        for result in _results(config, todo, store):
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
