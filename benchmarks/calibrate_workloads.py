"""Calibrate the benchmark workloads' ``quick`` targets with the baseline optimizers (AdamW and SGD).

For each workload it trains AdamW and SGD (heavy-ball momentum 0.9, and plain gradient descent where the
workload is full-batch) over a small learning-rate grid, for the workload's step budget, with the benchmark
runner (same model, batches, evaluation schedule and untimed evaluation as ``steepest bench run``). It prints,
per configuration and seed, the best target metric reached, the steps and seconds to reach each candidate
threshold, and the step time; then, per candidate threshold, the best configuration (fewest median steps over
the seeds that all reach it). A target is chosen from this table and written, with ``set_by`` naming the
optimizer, learning rate, seeds and torch version, into the workload module.

Run: ``python benchmarks/calibrate_workloads.py [-w zipf_softmax ...] [--size quick] [--seeds 0 1]
[--threads 1] [--max-steps N]``. Wall times come from the runner's clock (training steps only) on whatever the
machine is doing; the script waits for an idle machine before each workload and prints the busy fraction.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass

import torch

from steepest.bench.runner import RunResult, RunSpec, build_optimizer, train
from steepest.bench.workloads import get_workload

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _machine import wait_for_idle

# Per workload: candidate thresholds of the target metric, and the lr grids of the baselines.
GRIDS: dict[str, dict[str, object]] = {
    "zipf_softmax": {
        "thresholds": [0.3, 0.1, 0.05],
        "runs": [("adamw", {"lr": lr, "weight_decay": 0.0}) for lr in (3e-3, 1e-2, 3e-2)]
        + [("sgd", {"lr": lr, "momentum": 0.0}) for lr in (0.1, 0.3, 1.0, 3.0)]
        + [("sgd", {"lr": lr, "momentum": 0.9}) for lr in (0.01, 0.03)],
    },
    "matrix_sensing": {
        "thresholds": [1e-5, 1e-6, 1e-7],
        "runs": [("adamw", {"lr": lr, "weight_decay": 0.0}) for lr in (3e-3, 1e-2)]
        + [("sgd", {"lr": lr, "momentum": 0.0}) for lr in (0.3, 1.0)]
        + [("sgd", {"lr": lr, "momentum": 0.9}) for lr in (0.1,)],
    },
    "mnist1d_mlp": {
        "thresholds": [0.55, 0.6, 0.65],
        "runs": [("adamw", {"lr": lr, "weight_decay": 1e-2}) for lr in (1e-3, 3e-3, 1e-2)]
        + [("sgd", {"lr": lr, "momentum": 0.9}) for lr in (0.03, 0.1)],
    },
    "image_cnn": {  # MNIST-5k; for Fashion-MNIST pass --thresholds 0.85 0.87 0.88
        "thresholds": [0.95, 0.96, 0.97],
        "runs": [("adamw", {"lr": lr, "weight_decay": 1e-2}) for lr in (1e-3, 3e-3)]
        + [("sgd", {"lr": lr, "momentum": 0.9}) for lr in (0.03, 0.1)],
    },
    "char_lm": {
        "thresholds": [2.3, 2.1, 2.0, 1.9],
        "runs": [("adamw", {"lr": lr, "weight_decay": 0.1}) for lr in (3e-3, 1e-2)]
        + [("sgd", {"lr": lr, "momentum": 0.9}) for lr in (0.1, 0.3)],
    },
}


@dataclass
class Row:
    """One configuration's results over the seeds."""

    optimizer: str
    hyperparameters: dict[str, float]
    results: list[RunResult]


def first_reach(result: RunResult, value: float, higher_is_better: bool) -> tuple[int, float] | None:
    """``(step, seconds)`` of the first evaluation whose target metric meets ``value``, else ``None``."""
    for point in result.evals:
        if (point.metric >= value) if higher_is_better else (point.metric <= value):
            return point.step, point.wall_time_s
    return None


def best_metric(result: RunResult, higher_is_better: bool) -> float:
    """The best target-metric value over the run's evaluations."""
    values = [p.metric for p in result.evals]
    return max(values) if higher_is_better else min(values)


def calibrate(
    name: str, size: str, seeds: list[int], max_steps: int | None, thresholds: list[float] | None = None,
    only: str | None = None,
) -> None:
    """Run the grid of ``name`` (or its ``only`` optimizer) and print the per-run and per-threshold tables."""
    workload = get_workload(name, size)  # type: ignore[arg-type]
    grid = GRIDS[name]
    thresholds = thresholds or grid["thresholds"]  # type: ignore[assignment]
    assert thresholds is not None
    hib = workload.target.higher_is_better
    busy = wait_for_idle(timeout=60.0)
    print(f"\n== {name} ({size}); target metric {workload.target.metric} "
          f"({'higher' if hib else 'lower'} is better), budget {workload.budget}, machine busy {busy:.0%}")
    print(f"   source/notes: {getattr(workload, 'data_source', workload.description)}", flush=True)
    rows: list[Row] = []
    for key, hparams in grid["runs"]:  # type: ignore[attr-defined]
        if only is not None and key != only:
            continue
        results = []
        for seed in seeds:
            spec = RunSpec(name, size, key, hparams, seed=seed, max_steps=max_steps)  # type: ignore[arg-type]
            result = train(workload, lambda m, k=key, h=hparams: build_optimizer(k, workload, m, dict(h)),
                           seed, spec, max_steps=max_steps)
            results.append(result)
            reach = "  ".join(
                f"{t:g}:" + (f"{r[0]}st/{r[1]:.1f}s" if (r := first_reach(result, t, hib)) else "-")
                for t in thresholds
            )
            per_step = result.wall_time_s / max(result.total_steps, 1)
            print(f"   {key:6s} {hparams!s:40s} seed {seed}: {result.status:8s} best {best_metric(result, hib):.4g}"
                  f"  {reach}  ({per_step * 1e3:.1f} ms/step, {result.total_steps} steps)", flush=True)
        rows.append(Row(key, hparams, results))  # type: ignore[arg-type]
    print(f"   best per threshold (median over seeds {seeds}; all seeds must reach it):")
    for t in thresholds:
        best: tuple[float, float, Row] | None = None
        for row in rows:
            reached = [first_reach(r, t, hib) for r in row.results]
            if all(x is not None for x in reached):
                steps = statistics.median(x[0] for x in reached if x is not None)
                secs = statistics.median(x[1] for x in reached if x is not None)
                if best is None or steps < best[0]:
                    best = (steps, secs, row)
        for key in ("adamw", "sgd"):
            best_k: tuple[float, float, Row] | None = None
            for row in rows:
                if row.optimizer != key:
                    continue
                reached = [first_reach(r, t, hib) for r in row.results]
                if all(x is not None for x in reached):
                    steps = statistics.median(x[0] for x in reached if x is not None)
                    secs = statistics.median(x[1] for x in reached if x is not None)
                    if best_k is None or steps < best_k[0]:
                        best_k = (steps, secs, row)
            text = (f"{best_k[2].hyperparameters} {best_k[0]:.0f} steps, {best_k[1]:.1f} s"
                    if best_k else "not reached")
            print(f"     {t:g}  {key:6s} {text}")
    print(f"   torch {torch.__version__}, threads {torch.get_num_threads()}")


def main() -> None:
    """Parse arguments and calibrate the chosen workloads."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", "--workloads", nargs="*", default=list(GRIDS))
    parser.add_argument("--size", default="quick", choices=["tiny", "quick", "full"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--thresholds", nargs="*", type=float, default=None, help="override the candidates")
    parser.add_argument("--only", default=None, help="run only this optimizer key of the grid")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.workloads:
        calibrate(name, args.size, args.seeds, args.max_steps, args.thresholds, args.only)


if __name__ == "__main__":
    main()
