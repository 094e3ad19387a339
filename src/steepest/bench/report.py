"""The benchmark report: one HTML page with PNG plots, and a Markdown summary table, from a result store.

Plots (matplotlib, Agg backend, written next to ``index.html``):

* per workload: the target metric vs step and vs training time (median over seeds/studies, min-max band), with
  the target line;
* time-to-target bars per workload and optimizer (median over studies of the best trial; missed = empty bar);
* performance profiles ``rho(tau)`` for ``tau`` in [1, 4], one panel per unit (steps, gradient evaluations,
  seconds), with each optimizer's integrated score in the legend;
* memory vs time-to-target scatter (optimizer-state bytes and peak RSS);
* per-group curves for workloads that report ``extra_metrics`` (e.g. the loss per class-frequency group);
* step-size traces for optimizers that report an accepted step size (line searches, Polyak steps).

``summary.md`` holds the per-workload table and the scoreboard; the HTML page embeds both.
"""

from __future__ import annotations

import html
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steepest._extras import require
from steepest.bench.scoring import MAX_TAU, UNITS, Scoreboard, Unit, performance_profile, scoreboard
from steepest.bench.store import EvalRow, ResultStore, RunRow
from steepest.bench.workloads import WORKLOADS, workload_names

#: Values beyond this magnitude (a diverging run) are left out of the plots.
_PLOT_LIMIT = 1e30
_UNIT_LABEL = {"steps": "steps", "grad_evals": "gradient evaluations", "seconds": "seconds (train only)"}


@dataclass
class Report:
    """Where the report was written and what it holds."""

    html: Path
    markdown: Path
    images: list[Path]
    runs: int


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "miss"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e9):
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def _median(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(statistics.median(finite)) if finite else None


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "the benchmark report's plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _group_curves(
    runs: Sequence[RunRow], x: str, y: str
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Median and min-max of ``y`` over runs at each shared x (steps), or per-run x medians for time."""
    by_step: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        for point in run.evals:
            value = _eval_value(point, y)
            if value is None or not abs(value) < _PLOT_LIMIT:  # a diverging run's last points blow up the axes
                continue
            xv = float(point.step) if x == "step" else point.wall_time_s
            by_step[point.step].append((xv, value))
    xs, med, lo, hi = [], [], [], []
    for step in sorted(by_step):
        pairs = by_step[step]
        values = [v for _, v in pairs]
        xs.append(float(statistics.median([p[0] for p in pairs])))
        med.append(float(statistics.median(values)))
        lo.append(min(values))
        hi.append(max(values))
    return xs, med, lo, hi


def _eval_value(point: EvalRow, name: str) -> float | None:
    if name == "metric":
        return point.metric
    value = point.metrics.get(name) if point.metrics else None
    return float(value) if value is not None else None


def _best_runs(runs: Sequence[RunRow]) -> list[RunRow]:
    """The runs a curve shows: in tuning mode the best trial of each study, in defaults mode every seed."""
    by_study: dict[int, list[RunRow]] = defaultdict(list)
    for run in runs:
        by_study[run.study].append(run)
    chosen = []
    for members in by_study.values():
        chosen.append(min(members, key=_run_rank))
    return chosen


def _run_rank(run: RunRow) -> tuple[float, float]:
    steps = run.steps_to_target if run.reached and run.steps_to_target is not None else math.inf
    last = run.evals[-1].metric if run.evals and run.evals[-1].metric is not None else math.inf
    sign = -1.0 if run.higher_is_better else 1.0
    return (steps, sign * last if math.isfinite(last) else math.inf)


def _use_log(values: Sequence[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 50


def _plot_curves(plt: Any, workload: str, by_opt: dict[str, list[RunRow]], out: Path) -> Path:
    first = next(iter(by_opt.values()))[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    all_values: list[float] = []
    for opt, runs in sorted(by_opt.items()):
        shown = _best_runs(runs)
        for ax, x in zip(axes, ("step", "time"), strict=True):
            xs, med, lo, hi = _group_curves(shown, x, "metric")
            if not xs:
                continue
            line = ax.plot(xs, med, label=f"{opt} ({len(shown)} runs)")[0]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
            all_values += med
    for ax, xlabel in zip(axes, ("step", "training time (s, evaluation excluded)"), strict=True):
        ax.axhline(first.target_value, color="black", linestyle="--", linewidth=1, label="target")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(first.target_metric)
        if _use_log([*all_values, first.target_value]):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{workload} ({first.size}): {first.target_metric}, median and min-max over seeds/studies")
    fig.tight_layout()
    path = out / f"curves_{workload}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_groups(plt: Any, workload: str, groups: Sequence[str], by_opt: dict[str, list[RunRow]], out: Path) -> Path:
    n = len(by_opt)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False, sharey=True)  # one scale to compare
    values: list[float] = []
    for ax, (opt, runs) in zip(axes[0], sorted(by_opt.items()), strict=True):
        shown = _best_runs(runs)
        for group in groups:
            xs, med, lo, hi = _group_curves(shown, "step", group)
            if xs:
                line = ax.plot(xs, med, label=group)[0]
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
                values += med
        ax.set_title(opt)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if _use_log(values):
        axes[0][0].set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{workload}: per-group metrics")
    fig.tight_layout()
    path = out / f"groups_{workload}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_step_sizes(plt: Any, workload: str, by_opt: dict[str, list[RunRow]], out: Path) -> Path | None:
    traced = {
        opt: runs
        for opt, runs in by_opt.items()
        if any(p.step_size is not None for r in runs for p in r.evals)
    }
    if not traced:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for opt, runs in sorted(traced.items()):
        for i, run in enumerate(_best_runs(runs)):
            pts = [(p.step, p.step_size) for p in run.evals if p.step_size is not None]
            ax.plot([s for s, _ in pts], [v for _, v in pts], label=opt if i == 0 else None, alpha=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("accepted step size")
    ax.set_title(f"{workload}: step-size traces")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / f"stepsize_{workload}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_ttt_bars(plt: Any, boards: dict[Unit, Scoreboard], out: Path) -> Path:
    """One row per unit, one panel per workload, one bar per optimizer (missed: an empty slot marked "miss")."""
    first = next(iter(boards.values()))
    workloads = sorted({w for row in first.times.values() for w in row})
    opts = sorted(first.times)
    fig, axes = plt.subplots(
        len(boards), len(workloads), figsize=(max(4.0, 3.2 * len(workloads)), 2.9 * len(boards)), squeeze=False
    )
    for row, (unit, board) in enumerate(boards.items()):
        for ax, w in zip(axes[row], workloads, strict=True):
            values = [board.times[o].get(w, math.inf) for o in opts]
            heights = [v if math.isfinite(v) else 0.0 for v in values]
            bars = ax.bar(range(len(opts)), heights, color=[f"C{i % 10}" for i in range(len(opts))])
            for bar, v in zip(bars, values, strict=True):
                if not math.isfinite(v):
                    ax.annotate("miss", (bar.get_x() + bar.get_width() / 2, 0), ha="center", va="bottom", fontsize=8)
            ax.set_xticks(range(len(opts)), opts if row == len(boards) - 1 else [], rotation=45, ha="right",
                          fontsize=8)
            if row == 0:
                ax.set_title(w, fontsize=9)
            if not any(heights):
                ax.set_ylim(0, 1)
                ax.set_yticks([])
            ax.grid(alpha=0.3, axis="y")
        axes[row][0].set_ylabel(_UNIT_LABEL[unit], fontsize=8)
    fig.suptitle("time to target (median over studies of the best trial)")
    fig.tight_layout()
    path = out / "time_to_target.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_profiles(plt: Any, boards: dict[Unit, Scoreboard], out: Path) -> Path:
    import numpy as np

    taus = np.linspace(1.0, MAX_TAU, 301)
    fig, axes = plt.subplots(1, len(boards), figsize=(5 * len(boards), 3.8), squeeze=False)
    for ax, (unit, board) in zip(axes[0], boards.items(), strict=True):
        for opt in board.ranking():
            rho = performance_profile(board.ratios[opt], taus)
            ax.step(taus, rho, where="post", label=f"{opt} (B={board.scores[opt]:.2f})")
        ax.set_xlabel("tau (ratio to the best)")
        ax.set_ylabel("fraction of workloads")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"performance profile, {_UNIT_LABEL[unit]}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "performance_profiles.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_memory(plt: Any, runs: Sequence[RunRow], board: Scoreboard, out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    by_cell: dict[tuple[str, str], list[RunRow]] = defaultdict(list)
    for run in runs:
        by_cell[(run.optimizer, run.workload)].append(run)
    opts = sorted(board.times)
    markers = "osD^v<>pP*X"
    workloads = sorted({w for _, w in by_cell})
    for (opt, w), members in sorted(by_cell.items()):
        t = board.times.get(opt, {}).get(w, math.inf)
        if not math.isfinite(t):
            continue
        color = f"C{opts.index(opt) % 10}"
        marker = markers[workloads.index(w) % len(markers)]
        state = _median([float(r.state_bytes) for r in members]) or 0.0
        peak = _median([float(r.peak_rss_bytes - r.rss_at_start_bytes) for r in members]) or 0.0
        axes[0].scatter(t, state, color=color, marker=marker)
        axes[1].scatter(t, peak / 2**20, color=color, marker=marker)
    for i, opt in enumerate(opts):
        axes[0].scatter([], [], color=f"C{i % 10}", label=opt)
    for j, w in enumerate(workloads):
        axes[1].scatter([], [], color="gray", marker=markers[j % len(markers)], label=w)
    axes[0].set_ylabel("optimizer state (bytes)")
    axes[1].set_ylabel("peak RSS above run start (MiB)")
    for ax in axes:
        ax.set_xlabel(f"time to target ({_UNIT_LABEL[board.unit]})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("memory vs time to target (reached runs only)")
    fig.tight_layout()
    path = out / "memory_vs_time.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def summary_markdown(runs: Sequence[RunRow], boards: dict[Unit, Scoreboard], unit: Unit) -> str:
    """The Markdown summary: one row per workload and optimizer, then the scoreboard."""
    lines = [
        "| workload | optimizer | reached | steps | grad evals | seconds | final metric | target | state "
        "| peak RSS (+ during run) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_cell: dict[tuple[str, str], list[RunRow]] = defaultdict(list)
    for run in runs:
        by_cell[(run.workload, run.optimizer)].append(run)
    for (w, opt), members in sorted(by_cell.items()):
        reached = sum(r.reached for r in members)
        failed = sum(r.status != "ok" for r in members)
        finals = [r.evals[-1].metric for r in members if r.evals and r.evals[-1].metric is not None]
        first = members[0]
        sense = ">=" if first.higher_is_better else "<="
        lines.append(
            f"| {w} | {opt} | {reached}/{len(members)}" + (f" ({failed} failed)" if failed else "") + " | "
            + " | ".join(_fmt(boards[u].times.get(opt, {}).get(w)) for u in UNITS)
            + f" | {_fmt(_median(finals))} | {first.target_metric} {sense} {_fmt(first.target_value)}"
            + f" | {_bytes(_median([float(r.state_bytes) for r in members]))}"
            + f" | {_bytes(_median([float(r.peak_rss_bytes) for r in members]))}"
            + f" (+{_bytes(_median([float(r.peak_rss_bytes - r.rss_at_start_bytes) for r in members]))}) |"
        )
    lines += [
        "",
        "Times are the median over studies (seeds in defaults mode) of the best trial; `miss`: target not reached.",
        "",
        f"| optimizer | score B ({unit}) | " + " | ".join(f"B ({u})" for u in UNITS if u != unit)
        + " | fraction solved |",
        "|---|---:|" + "---:|" * (len(UNITS) - 1) + "---:|",
    ]
    board = boards[unit]
    for opt in board.ranking():
        others = " | ".join(f"{boards[u].scores.get(opt, 0.0):.3f}" for u in UNITS if u != unit)
        lines.append(f"| {opt} | {board.scores[opt]:.3f} | {others} | {board.solved[opt]:.2f} |")
    lines += ["", f"Score B: AlgoPerf's integrated performance profile, tau in [1, {MAX_TAU:g}] (1 = best everywhere)."]
    return "\n".join(lines) + "\n"


def _markdown_table_html(markdown: str) -> str:
    parts: list[str] = []
    table_rows: list[list[str]] = []

    def flush() -> None:
        if table_rows:
            head, *body = table_rows
            cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
            parts.append(f"<table><thead><tr>{cells}</tr></thead><tbody>{rows}</tbody></table>")
            table_rows.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= set("-:") for c in cells):
                table_rows.append(cells)
        else:
            flush()
            if line.strip():
                parts.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(parts)


def write_report(
    store: ResultStore,
    out: str | Path,
    unit: Unit = "grad_evals",
    workloads: Sequence[str] | None = None,
    optimizers: Sequence[str] | None = None,
    sweep: str | None = None,
) -> Report:
    """Write ``index.html``, ``summary.md`` and the PNGs for the store's runs (optionally filtered) to ``out``.

    Raises:
        ValueError: the store holds no matching run.
    """
    runs = store.runs(workloads, optimizers, sweep)
    if not runs:
        raise ValueError(f"no runs in {store.url} match the filters; run `steepest bench run` first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    boards = {u: scoreboard(runs, u) for u in UNITS}
    by_workload: dict[str, dict[str, list[RunRow]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_workload[run.workload][run.optimizer].append(run)
    registered = set(workload_names())
    images: list[Path] = []
    sections: list[str] = []
    for w in sorted(by_workload):
        by_opt = dict(by_workload[w])
        figs = [_plot_curves(plt, w, by_opt, out)]
        groups = WORKLOADS[w].extra_metrics if w in registered else ()
        if groups:
            figs.append(_plot_groups(plt, w, groups, by_opt, out))
        stepsize = _plot_step_sizes(plt, w, by_opt, out)
        if stepsize is not None:
            figs.append(stepsize)
        images += figs
        desc = WORKLOADS[w].description if w in registered else ""
        sections.append(
            f"<h3>{html.escape(w)}</h3><p>{html.escape(desc)}</p>"
            + "".join(f'<img src="{p.name}" alt="{html.escape(p.stem)}">' for p in figs)
        )
    overview = [_plot_ttt_bars(plt, boards, out)]
    overview.append(_plot_profiles(plt, boards, out))
    overview.append(_plot_memory(plt, runs, boards[unit], out))
    images += overview
    markdown = summary_markdown(runs, boards, unit)
    md_path = out / "summary.md"
    md_path.write_text("# steepest benchmark summary\n\n" + markdown)
    envs = sorted({f"steepest {r.version}, torch {r.environment.get('torch')}, "
                   f"{r.environment.get('threads')} thread(s)" for r in runs})
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>steepest benchmark report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}} img{{max-width:100%;display:block;margin:8px 0}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}
td:first-child,td:nth-child(2),th{{text-align:left}}</style></head><body>
<h1>steepest benchmark report</h1>
<p>{len(runs)} runs from <code>{html.escape(store.url)}</code>; {html.escape("; ".join(envs))}.</p>
<h2>Summary</h2>
{_markdown_table_html(markdown)}
<h2>Scores</h2>
{"".join(f'<img src="{p.name}" alt="{html.escape(p.stem)}">' for p in overview)}
<h2>Workloads</h2>
{"".join(sections)}
</body></html>
"""
    html_path = out / "index.html"
    html_path.write_text(page)
    return Report(html_path, md_path, images, len(runs))
