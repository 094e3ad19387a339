"""``steepest bench``: run sweeps, write the report, list workloads and optimizers.

* ``steepest bench run [--config quick|FILE] [-w W ...] [-o O ...] [--seeds S ...] [--size S] [--budget STEPS]
  [--mode defaults|tune] [--trials N] [--studies K] [--store URL] [--jobs N] [--threads N]
  [--executor local|ray] [--address ADDR] [--dry-run] [--report]``: run every workload x optimizer x seed (or
  tuning trial) of the config that the store does not have yet (a killed sweep resumes), with a progress bar,
  in local processes or as Ray tasks; ``--report`` writes the report afterwards.
* ``steepest bench report [--config ...] [--store URL] [--out DIR] [--unit U] [-w W ...] [-o O ...]``.
* ``steepest bench list``: registered workloads (targets and budgets per size), optimizers, shipped configs.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from steepest._extras import require
from steepest.bench.config import ConfigError, SweepConfig, load_config, shipped_configs
from steepest.bench.executors import EXECUTORS, ExecutorError
from steepest.bench.scoring import UNITS
from steepest.bench.tuning import MODES
from steepest.bench.workloads import SIZES, WORKLOADS, workload_names

#: Exit status for bad input, as the rest of the ``steepest`` command.
EXIT_USAGE = 2


def _error(message: str) -> int:
    print(f"steepest bench: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _apply_overrides(config: SweepConfig, args: argparse.Namespace) -> SweepConfig:
    if getattr(args, "workload", None):
        config.workloads = list(args.workload)
    if getattr(args, "optimizer", None):
        config.optimizers = list(args.optimizer)
    for attr, name in (("seeds", "seeds"), ("size", "size"), ("mode", "mode"), ("budget", "max_steps"),
                       ("jobs", "jobs"), ("threads", "threads"), ("trials", "trials"), ("studies", "studies"),
                       ("store", "store"), ("out", "report"), ("unit", "unit"), ("executor", "executor"),
                       ("address", "address")):
        value = getattr(args, attr, None)
        if value is not None:
            setattr(config, name, list(value) if isinstance(value, list) else value)
    for name in ("budget", "jobs", "threads", "trials", "studies"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {value}")
    if getattr(args, "seeds", None) is not None and (
        any(s < 0 for s in args.seeds) or len(set(args.seeds)) != len(args.seeds)
    ):
        raise ConfigError(f"--seeds must be distinct non-negative integers, got {args.seeds}")
    return config


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or, with ``--dry-run``, list) the sweep."""
    from steepest.bench.store import ResultStore
    from steepest.bench.sweep import expand, run_sweep

    try:
        config = _apply_overrides(load_config(args.config), args)
        if args.dry_run:
            messages = config.check_names(dry_run=True)
            for message in messages:
                print(message)
            valid = [w for w in config.workloads if w in set(workload_names())]
            specs = expand(config, valid)
            store = ResultStore(config.store)
            done = store.done_keys([s.key() for s in specs])
            print(f"sweep {config.name!r} ({config.source}): {len(specs)} runs, {len(done)} already in "
                  f"{config.store}, {len(specs) - len(done)} to run")
            for spec in specs:
                mark = "done" if spec.key() in done else "todo"
                print(f"  [{mark}] {spec.label()} {spec.hyperparameters_json()}")
            return 0
        config.check_names(dry_run=False)
    except ConfigError as err:
        return _error(str(err))
    store = ResultStore(config.store)
    started = time.perf_counter()
    try:
        summary = run_sweep(config, store, progress=not args.no_progress)
    except ExecutorError as err:
        return _error(str(err))
    elapsed = time.perf_counter() - started
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(summary.statuses.items())) or "none run"
    print(f"sweep {config.name!r}: {summary.planned} runs planned, {summary.skipped} already stored, "
          f"{summary.ran} run now ({statuses}) in {elapsed:.1f} s; store: {config.store}")
    if args.report:
        return _write_report(config, args)
    return 0


def _write_report(config: SweepConfig, args: argparse.Namespace) -> int:
    from steepest.bench.report import write_report
    from steepest.bench.store import ResultStore

    try:
        report = write_report(
            ResultStore(config.store),
            config.report,
            unit=config.unit,
            workloads=getattr(args, "workload", None) or None,
            optimizers=getattr(args, "optimizer", None) or None,
            sweep=getattr(args, "sweep", None),
        )
    except ValueError as err:
        return _error(str(err))
    print(f"report: {report.html} ({report.runs} runs, {len(report.images)} plots); summary: {report.markdown}")
    print(report.markdown.read_text())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report and the Markdown summary."""
    try:
        config = _apply_overrides(load_config(args.config), args)
    except ConfigError as err:
        return _error(str(err))
    return _write_report(config, args)


def cmd_list(args: argparse.Namespace) -> int:
    """Print the registered workloads, the optimizers and the shipped configs."""
    Console = require("rich.console", "steepest bench list").Console
    Table = require("rich.table", "steepest bench list").Table
    Text = require("rich.text", "steepest bench list").Text

    from steepest.optim import REGISTRY

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200, highlight=False)
    table = Table(title="benchmark workloads")
    for column in ("workload", "description", *(f"{s}: target / budget" for s in SIZES)):
        table.add_column(column)
    for name in workload_names():
        cells = []
        for size in SIZES:
            try:
                w = WORKLOADS[name](size)
                t, b = w.target, w.budget
                sense = ">=" if t.higher_is_better else "<="
                cells.append(f"{t.metric} {sense} {t.value:g} / {b.max_steps} steps x {b.batch_size}")
            except Exception as err:  # a size a workload cannot build here: say so, keep listing
                cells.append(f"unavailable ({type(err).__name__})")
        table.add_row(Text(name), Text(WORKLOADS[name].description), *(Text(c) for c in cells))
    console.print(table)
    opt_table = Table(title="optimizers (submissions)")
    for column in ("optimizer", "families", "closure", "search space"):
        opt_table.add_column(column)
    for key, entry in sorted(REGISTRY.items()):
        caps = entry.capabilities
        opt_table.add_row(Text(key), Text(", ".join(entry.families)),
                          Text("gradient-free" if caps.gradient_free else "yes" if caps.requires_closure else "no"),
                          Text(", ".join(entry.search_space) or "-"))
    console.print(opt_table)
    console.print(f"shipped configs: {', '.join(shipped_configs())} (steepest bench run --config NAME)", markup=False)
    return 0


def add_bench_parser(commands: Any) -> None:
    """Add ``bench`` with its ``run``, ``report`` and ``list`` subcommands to the ``steepest`` parser."""
    bench = commands.add_parser("bench", help="benchmark optimizers on workloads (time to target, memory)",
                                description="AlgoPerf-style benchmark: time to target, memory, tuning budgets.")
    sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH_COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default="quick", help="sweep config: a TOML file or a shipped name "
                       f"({', '.join(shipped_configs())}; default: quick)")
        p.add_argument("-w", "--workload", action="append", help="only this workload (repeatable)")
        p.add_argument("-o", "--optimizer", action="append", help="only this optimizer (repeatable)")
        p.add_argument("--store", help="result store: a SQLite path or a SQLAlchemy URL (default: the config's)")
        p.add_argument("--out", help="report directory (default: the config's)")
        p.add_argument("--unit", choices=UNITS, help="unit of the headline scores (default: the config's)")

    run_p = sub.add_parser("run", help="run a sweep (resumes: runs already in the store are skipped)")
    common(run_p)
    run_p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the config's)")
    run_p.add_argument("--size", choices=SIZES, help="workload size (default: the config's)")
    run_p.add_argument("--budget", type=int, help="step budget per run, overriding the workloads' budgets")
    run_p.add_argument("--mode", choices=MODES, help="defaults-only or external tuning (default: the config's)")
    run_p.add_argument("--trials", type=int, help="tuning trials per study")
    run_p.add_argument("--studies", type=int, help="tuning studies")
    run_p.add_argument("--jobs", type=int, help="runs in parallel (default: the config's)")
    run_p.add_argument("--threads", type=int, help="torch threads per run (default: the config's)")
    run_p.add_argument("--executor", choices=EXECUTORS,
                       help="local: this process or a pool of --jobs processes; ray: one Ray task per run "
                       "(default: the config's)")
    run_p.add_argument("--address", help="--executor ray: the cluster ('auto': the one `ray start` runs here, "
                       "'host:port', 'local': a private one); use a postgresql:// --store when machines differ")
    run_p.add_argument("--dry-run", action="store_true", help="list the runs and what the store has; run nothing")
    run_p.add_argument("--no-progress", action="store_true", help="no progress bar")
    run_p.add_argument("--report", action="store_true", help="write the report after the sweep")
    run_p.set_defaults(func=cmd_run)

    report_p = sub.add_parser("report", help="write the HTML report and Markdown summary from a store")
    common(report_p)
    report_p.add_argument("--sweep", help="only runs of this sweep name")
    report_p.set_defaults(func=cmd_report)

    list_p = sub.add_parser("list", help="list workloads, optimizers and shipped configs")
    list_p.set_defaults(func=cmd_list)
