"""Scoring: time-to-target per submission and workload, performance profiles and the integrated score.

Follows AlgoPerf's rules (Dahl et al., "Benchmarking Neural Network Training Algorithms", 2023,
arXiv:2306.07179; scoring code of mlcommons/algorithmic-efficiency, read for the rules, not copied):

* time-to-target of a submission on a workload = the **median over studies** of the **best (minimum) trial**
  time in that study; a trial that misses the target counts as infinity, so a median of infinities is a miss.
  In defaults-only mode every seed is its own study with one trial, so this is the median over seeds.
* performance ratio ``r_{s,w} = t_{s,w} / min_s t_{s,w}``; ratios above ``max_tau`` (4) are set to infinity.
* performance profile ``rho_s(tau)`` = fraction of workloads with ``r_{s,w} <= tau``.
* integrated score ``B_s = 1/(max_tau - 1) * integral_1^max_tau rho_s(tau) dtau``, in [0, 1]. The profile is
  a step function, so the integral is computed exactly: each workload with ratio ``r <= max_tau`` adds
  ``(max_tau - r) / (max_tau - 1)`` divided by the number of workloads (AlgoPerf integrates numerically on a
  grid of taus; the exact value is the limit of that grid).
* fraction solved = fraction of workloads with a finite time-to-target.

Time is measured in three units: optimizer ``steps``, ``grad_evals`` (gradient-evaluation equivalents, which
charge closure-based methods for every gradient they compute) and ``seconds`` (training wall time, evaluation
excluded).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

Unit = Literal["steps", "grad_evals", "seconds"]
UNITS: tuple[Unit, ...] = ("steps", "grad_evals", "seconds")
#: AlgoPerf's largest performance ratio (r_max).
MAX_TAU = 4.0
INF = math.inf


class RunLike(Protocol):
    """What scoring reads from a stored run (:class:`steepest.bench.store.RunRow` has all of it)."""

    workload: str
    optimizer: str
    study: int
    trial: int
    reached: bool
    steps_to_target: int | None
    grad_evals_to_target: int | None
    time_to_target_s: float | None


def run_time(run: RunLike, unit: Unit) -> float:
    """The run's time-to-target in ``unit``; infinity when it missed the target."""
    if not run.reached:
        return INF
    value: Any = {
        "steps": run.steps_to_target,
        "grad_evals": run.grad_evals_to_target,
        "seconds": run.time_to_target_s,
    }[unit]
    return float(value) if value is not None else INF


def median_of_best(times_by_study: Mapping[int, Sequence[float]]) -> float:
    """AlgoPerf's external-tuning time: median over studies of the minimum over each study's trials.

    >>> median_of_best({0: [5.0, 3.0], 1: [math.inf], 2: [4.0, 9.0]})
    4.0
    >>> median_of_best({0: [math.inf], 1: [math.inf], 2: [2.0]})
    inf
    """
    if not times_by_study:
        return INF
    bests = [min(times) if times else INF for times in times_by_study.values()]
    return float(statistics.median(bests))


def time_to_target_table(runs: Iterable[RunLike], unit: Unit) -> dict[str, dict[str, float]]:
    """``{optimizer: {workload: time}}`` with :func:`median_of_best` over each cell's runs."""
    cells: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        cells[(run.optimizer, run.workload)][run.study].append(run_time(run, unit))
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for (opt, workload), studies in cells.items():
        table[opt][workload] = median_of_best(studies)
    return dict(table)


def performance_ratios(
    times: Mapping[str, Mapping[str, float]], max_tau: float = MAX_TAU
) -> dict[str, dict[str, float]]:
    """``r_{s,w} = t_{s,w} / min_s t_{s,w}``; infinite when missed, unsolved by all, or above ``max_tau``.

    Workloads a submission has no time for count as missed for it.
    """
    workloads = sorted({w for row in times.values() for w in row})
    best = {w: min((row.get(w, INF) for row in times.values()), default=INF) for w in workloads}
    ratios: dict[str, dict[str, float]] = {}
    for opt, row in times.items():
        ratios[opt] = {}
        for w in workloads:
            t = row.get(w, INF)
            r = t / best[w] if math.isfinite(t) and math.isfinite(best[w]) and best[w] > 0 else INF
            if best[w] == 0 and t == 0:
                r = 1.0
            ratios[opt][w] = r if r <= max_tau else INF
    return ratios


def performance_profile(ratios: Mapping[str, float], taus: Sequence[float] | np.ndarray) -> np.ndarray:
    """``rho(tau)``: fraction of workloads with ratio at most ``tau``, for each ``tau``."""
    values = np.array(list(ratios.values()), dtype=float)
    taus = np.asarray(taus, dtype=float)
    if values.size == 0:
        return np.zeros_like(taus)
    return np.asarray((values[None, :] <= taus[:, None]).mean(axis=1), dtype=float)


def integrated_score(ratios: Mapping[str, float], max_tau: float = MAX_TAU) -> float:
    """``1/(max_tau - 1) * integral_1^max_tau rho(tau) dtau``, exactly (the profile is a step function)."""
    if not ratios:
        return 0.0
    total = sum((max_tau - r) / (max_tau - 1.0) for r in ratios.values() if r <= max_tau)
    return total / len(ratios)


def fraction_solved(times: Mapping[str, float]) -> float:
    """Fraction of workloads with a finite time-to-target."""
    return sum(math.isfinite(t) for t in times.values()) / len(times) if times else 0.0


@dataclass(frozen=True)
class Scoreboard:
    """Scores of every submission in one unit."""

    unit: Unit
    times: dict[str, dict[str, float]]
    ratios: dict[str, dict[str, float]]
    scores: dict[str, float]
    solved: dict[str, float]

    def ranking(self) -> list[str]:
        """Submissions best first (integrated score, then fraction solved)."""
        return sorted(self.scores, key=lambda s: (-self.scores[s], -self.solved[s], s))


def scoreboard(runs: Iterable[RunLike], unit: Unit, max_tau: float = MAX_TAU) -> Scoreboard:
    """Times, ratios, integrated scores and fraction solved for every optimizer in ``runs``."""
    times = time_to_target_table(runs, unit)
    workloads = sorted({w for row in times.values() for w in row})
    for row in times.values():  # a submission that never ran a workload missed it
        for w in workloads:
            row.setdefault(w, INF)
    ratios = performance_ratios(times, max_tau)
    return Scoreboard(
        unit=unit,
        times=times,
        ratios=ratios,
        scores={s: integrated_score(r, max_tau) for s, r in ratios.items()},
        solved={s: fraction_solved(t) for s, t in times.items()},
    )
