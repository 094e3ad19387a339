"""The ``steepest`` command: browse the registry and run the demo.

Commands:

* ``steepest list [--family F]``: every registered optimizer, its class, families and paper.
* ``steepest info NAME``: paper, update rule, defaults, state, requirements, suggested
  hyperparameters and description of one optimizer.
* ``steepest demo [--optimizer lion] [--epochs N] [--seed S] [--lr X] ...``: train a small
  MLP on scikit-learn's bundled digits with the optimizer and with AdamW, and compare.
* ``steepest bench ...``: the benchmark (:mod:`steepest.bench.cli`).

``python -m steepest`` is the same command. ``list`` and ``info`` need only the base install
(torch and numpy); ``demo`` and ``bench`` need the ``bench`` extra, imported when they run, and
without it they stop with one line naming ``pip install "steepest[bench]"``.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import math
import os
import shutil
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

import steepest
from steepest._extras import MissingExtraError
from steepest.optim import FAMILIES, REGISTRY, RegistryEntry, list_optimizers, optimizer_info

#: Exit status for bad input: unknown optimizer or family, bad hyperparameter (as argparse).
EXIT_USAGE = 2
#: Exit status when a command needs an extra that is not installed.
EXIT_MISSING_EXTRA = 1
#: Epochs of ``steepest demo`` unless ``--epochs`` says otherwise (``steepest.demo.DEFAULT_EPOCHS``).
DEMO_EPOCHS = 30
#: Table width without a terminal and without ``COLUMNS``: rows stay whole, so the output greps well.
PIPE_WIDTH = 200


class UsageError(Exception):
    """Bad input from the command line; reported as one line, exit status 2."""


def _width() -> int:
    if "COLUMNS" in os.environ or sys.stdout.isatty():
        return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns
    return PIPE_WIDTH


@dataclass
class _Table:
    """A box-drawn text table; cells wrap (widest column first) to fit the width."""

    title: str
    columns: Sequence[str] = ()  # no header row when empty
    rows: list[Sequence[str]] = field(default_factory=list)
    caption: str = ""
    right: frozenset[int] = frozenset()  # right-aligned column indices

    def render(self, width: int) -> str:
        n = len(self.columns) if self.columns else max((len(r) for r in self.rows), default=1)
        widths = [max([len(c) for c in (self.columns[i:i + 1] or [""])] + [len(r[i]) for r in self.rows])
                  for i in range(n)]
        while sum(widths) + 3 * n + 1 > width and max(widths) > 8:
            widths[widths.index(max(widths))] -= 1

        def line(cells: Sequence[str], bar: str) -> list[str]:
            wrapped = [textwrap.wrap(c, w, break_on_hyphens=False) or [""] for c, w in zip(cells, widths, strict=True)]
            out = []
            for k in range(max(len(w) for w in wrapped)):
                parts = []
                for i, (cell, w) in enumerate(zip(wrapped, widths, strict=True)):
                    text = cell[k] if k < len(cell) else ""
                    parts.append(text.rjust(w) if i in self.right else text.ljust(w))
                out.append(bar + " " + f" {bar} ".join(parts) + " " + bar)
            return out

        def rule(left: str, mid: str, end: str, fill: str) -> str:
            return left + mid.join(fill * (w + 2) for w in widths) + end

        total = sum(widths) + 3 * n + 1
        lines = [self.title.center(total).rstrip()] if self.title else []
        if self.columns:
            lines += [rule("┏", "┳", "┓", "━"), *line(self.columns, "┃"), rule("┡", "╇", "┩", "━")]
        else:
            lines.append(rule("┌", "┬", "┐", "─"))
        for row in self.rows:
            lines += line(row, "│")
        lines.append(rule("└", "┴", "┘", "─"))
        if self.caption:
            lines.append(self.caption.center(total).rstrip())
        return "\n".join(lines)

    def print(self) -> None:
        print(self.render(_width()))


def _short_cite(entry: RegistryEntry) -> str:
    paper = entry.paper
    parts = [paper.authors, f"{paper.venue} {paper.year}" if paper.venue else str(paper.year)]
    if paper.arxiv:
        parts.append(f"arXiv:{paper.arxiv}")
    return ", ".join(parts)


def _format_mapping(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items()) if values else "none"


def _format_search_space(entry: RegistryEntry) -> str:
    parts = []
    for name, dim in entry.search_space.items():
        if dim.kind == "choice":
            parts.append(f"{name}: one of {', '.join(repr(c) for c in dim.choices)}")
        else:
            parts.append(f"{name}: {dim.kind} [{dim.low:g}, {dim.high:g}]")
    return "; ".join(parts) if parts else "none"


def _requirements(entry: RegistryEntry) -> str:
    caps = entry.capabilities
    yes_no = {True: "yes", False: "no"}
    return (
        f"closure: {yes_no[caps.requires_closure]}; "
        f"create_graph: {yes_no[caps.needs_create_graph]}; "
        f"foreach path: {yes_no[caps.supports_foreach]}; "
        f"fused path: {yes_no[caps.supports_fused or entry.key in ('sgd', 'adamw')]}; "
        f"named parameters: {yes_no[caps.needs_named_parameters]}; "
        f"sparse gradients: {'supported' if caps.supports_sparse else 'no (raise)'}"
    )


def _description(entry: RegistryEntry) -> str:
    doc = inspect.getdoc(entry.cls) or ""
    return " ".join(doc.split("\n\n", 1)[0].split()) or "(no docstring)"


def _public_name(entry: RegistryEntry) -> str:
    name = entry.cls.__name__
    return f"steepest.{name}" if getattr(steepest, name, None) is entry.cls else f"{entry.cls.__module__}.{name}"


def _entry(name: str) -> RegistryEntry:
    try:
        return optimizer_info(name)
    except KeyError:
        raise UsageError(f"unknown optimizer {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


# -- commands ------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    """Print the registry as a table, optionally one family only."""
    keys = list_optimizers(family=args.family)
    if not keys:
        print(f"No optimizer is tagged {args.family!r} yet.")
        return 0
    title = "steepest optimizers" + (f" (family: {args.family})" if args.family else "")
    table = _Table(title, ("key", "class", "families", "paper"))
    for key in keys:
        entry = REGISTRY[key]
        table.rows.append((key, _public_name(entry), ", ".join(entry.families), _short_cite(entry)))
    table.print()
    print("Details: steepest info NAME")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print everything the registry and the class say about one optimizer."""
    entry = _entry(args.name)
    rows = (
        ("families", ", ".join(entry.families)),
        ("paper", entry.paper.cite()),
        ("update rule", entry.update_rule),
        ("defaults", _format_mapping(entry.defaults())),
        ("state per parameter", entry.state_description()),
        ("requirements", _requirements(entry)),
        ("suggested", _format_mapping(entry.suggested)),
        ("search space", _format_search_space(entry)),
        ("description", _description(entry)),
    )
    _Table(f"{entry.key}: {_public_name(entry)}", rows=list(rows)).print()
    return 0


def _parse_hp(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = dict(args.hp or [])
    if args.lr is not None:
        overrides["lr"] = args.lr
    if args.weight_decay is not None:
        overrides["weight_decay"] = args.weight_decay
    return overrides


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base and math.isfinite(value / base) else "n/a"


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the demo MLP with the optimizer and with AdamW; print the comparison."""
    _entry(args.optimizer)
    if args.epochs is None:
        args.epochs = DEMO_EPOCHS
    if args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    from steepest.demo import BASELINE, resolve_hyperparameters, run_demo

    try:
        hyperparameters = resolve_hyperparameters(args.optimizer, _overrides(args))
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None
    if not args.json:
        print(
            f"Training an MLP 64-64-10 on scikit-learn's digits for {args.epochs} epochs "
            f"(batch {args.batch_size}, seed {args.seed}): {args.optimizer} vs adamw, "
            "same initial weights and batch order."
        )
        for key, hp in ((args.optimizer, hyperparameters), (BASELINE, resolve_hyperparameters(BASELINE))):
            print(f"  {key}: {_format_mapping(hp)}")
    result = run_demo(
        args.optimizer,
        args.epochs,
        args.seed,
        hyperparameters=hyperparameters,
        batch_size=args.batch_size,
        quiet=args.quiet or args.json,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=repr))
        return 0
    table = _Table(
        f"digits, {result.train_size} train / {result.test_size} test images, {result.epochs} epochs",
        ("optimizer", "train loss", "test loss", "test accuracy", "state bytes", "time (s)"),
        right=frozenset(range(1, 6)),
    )
    for run in result.runs:
        table.rows.append((
            run.key,
            f"{run.train_loss:.4f}",
            f"{run.test_loss:.4f}",
            f"{100 * run.test_accuracy:.2f}%",
            f"{run.state_bytes:,}",
            f"{run.wall_time_s:.2f}",
        ))
    ours, base = result.runs
    table.caption = (
        f"{ours.key} / {base.key}: state {_ratio(ours.state_bytes, base.state_bytes)}, "
        f"time {_ratio(ours.wall_time_s, base.wall_time_s)}"
    )
    table.print()
    return 0


# -- parser --------------------------------------------------------------------------------


def build_parser(*, bench: bool = True) -> argparse.ArgumentParser:
    """Build the ``steepest`` argument parser.

    Args:
        bench: add the ``bench`` subcommands (imports :mod:`steepest.bench.cli`); with
            ``False``, ``bench`` is listed in the help only, which keeps the other commands
            light. :func:`main` passes ``True`` exactly when the command is ``bench``.
    """
    parser = argparse.ArgumentParser(
        prog="steepest",
        description="Training optimizers from recent optimization research, for PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"steepest {steepest.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    list_parser = commands.add_parser("list", help="list registered optimizers")
    list_parser.add_argument("--family", choices=FAMILIES, help="only optimizers tagged with this family")
    list_parser.set_defaults(func=cmd_list)

    info_parser = commands.add_parser("info", help="show one optimizer: paper, update rule, defaults, needs")
    info_parser.add_argument("name", help="registry key (see `steepest list`)")
    info_parser.set_defaults(func=cmd_info)

    demo_parser = commands.add_parser(
        "demo",
        help="train a small MLP on scikit-learn's digits with an optimizer and with AdamW",
        description="Train a 64-64-10 MLP on scikit-learn's bundled digits (no download) with the "
        "optimizer and with AdamW, from the same initial weights and batch order, and compare.",
    )
    demo_parser.add_argument("--optimizer", default="lion", help="registry key (default: lion)")
    demo_parser.add_argument("--epochs", type=int, help=f"default: {DEMO_EPOCHS}")
    demo_parser.add_argument("--seed", type=int, default=0, help="initial weights and batch order (default: 0)")
    demo_parser.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    demo_parser.add_argument("--lr", type=float, help="learning rate (default: the registry's suggested one)")
    demo_parser.add_argument("--weight-decay", type=float, help="weight decay (default: the suggested one)")
    demo_parser.add_argument(
        "--hp",
        type=_parse_hp,
        action="append",
        metavar="KEY=VALUE",
        help="any other hyperparameter, e.g. --hp 'betas=(0.95, 0.98)'; repeatable",
    )
    demo_parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: torch's own setting, left untouched); "
        "1 is steadier on a busy machine",
    )
    demo_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    demo_parser.add_argument("--json", action="store_true", help="print the results as JSON, no table")
    demo_parser.set_defaults(func=cmd_demo)

    if bench:
        from steepest.bench.cli import add_bench_parser

        add_bench_parser(commands)
    else:
        commands.add_parser("bench", help="benchmark optimizers on workloads (steepest bench --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``steepest`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 for bad input (also raised as ``SystemExit(2)`` by
        argparse for malformed options), 1 when the command needs an extra that is not
        installed (the message names the ``pip install`` command).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # The top level has no options but --help and --version, so the command is argv[0].
        args = build_parser(bench=argv[:1] == ["bench"]).parse_args(argv)
        status: int = args.func(args)
    except UsageError as err:
        print(f"steepest: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except MissingExtraError as err:
        print(f"steepest: error: {err}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except BrokenPipeError:
        # The reader went away (`steepest list | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status
