"""Scoring follows the written AlgoPerf rules; the profile math is checked on a hand-computed case."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from steepest.bench.scoring import (
    fraction_solved,
    integrated_score,
    median_of_best,
    performance_profile,
    performance_ratios,
    run_time,
    scoreboard,
)

INF = math.inf


@dataclass
class FakeRun:
    workload: str
    optimizer: str
    study: int
    trial: int
    reached: bool
    steps_to_target: int | None
    grad_evals_to_target: int | None
    time_to_target_s: float | None


# Hand-computed case. Times (steps):
#          w1    w2    w3    w4
#   A      10    40    inf   5
#   B      20    10    30    inf
#   C      50    12    inf   inf
# best:    10    10    30    5
# ratios:
#   A      1     4     inf   1
#   B      2     1     1     inf
#   C      5->inf 1.2  inf   inf        (5 > max_tau 4 -> inf)
# B(s) = mean over workloads of (4 - r)/3 for r <= 4:
#   A: (3/3 + 0/3 + 0 + 3/3) / 4 = 2/4 = 0.5
#   B: (2/3 + 3/3 + 3/3 + 0) / 4 = (8/3)/4 = 2/3
#   C: (0 + 2.8/3 + 0 + 0) / 4 = 0.7/3 = 0.2333...
TIMES = {
    "A": {"w1": 10.0, "w2": 40.0, "w3": INF, "w4": 5.0},
    "B": {"w1": 20.0, "w2": 10.0, "w3": 30.0, "w4": INF},
    "C": {"w1": 50.0, "w2": 12.0, "w3": INF, "w4": INF},
}


def test_ratios_hand_computed() -> None:
    r = performance_ratios(TIMES)
    assert r["A"] == {"w1": 1.0, "w2": 4.0, "w3": INF, "w4": 1.0}
    assert r["B"] == {"w1": 2.0, "w2": 1.0, "w3": 1.0, "w4": INF}
    assert r["C"]["w1"] == INF  # 5 > max_tau
    assert r["C"]["w2"] == pytest.approx(1.2)


def test_profile_hand_computed() -> None:
    r = performance_ratios(TIMES)
    taus = [1.0, 1.1, 1.2, 2.0, 3.999, 4.0]
    assert performance_profile(r["A"], taus).tolist() == [0.5, 0.5, 0.5, 0.5, 0.5, 0.75]
    assert performance_profile(r["B"], taus).tolist() == [0.5, 0.5, 0.5, 0.75, 0.75, 0.75]
    assert performance_profile(r["C"], taus).tolist() == [0.0, 0.0, 0.25, 0.25, 0.25, 0.25]


def test_integrated_score_hand_computed_and_matches_numeric_integral() -> None:
    r = performance_ratios(TIMES)
    assert integrated_score(r["A"]) == pytest.approx(0.5)
    assert integrated_score(r["B"]) == pytest.approx(2 / 3)
    assert integrated_score(r["C"]) == pytest.approx(0.7 / 3)
    taus = np.linspace(1.0, 4.0, 300001)
    for s in "ABC":
        rho = performance_profile(r[s], taus)
        numeric = float(np.trapezoid(rho, taus)) / 3.0
        assert integrated_score(r[s]) == pytest.approx(numeric, abs=1e-4)


def test_median_of_best_over_studies() -> None:
    # study bests: 3, inf, 4 -> median 4; the best single trial (3) is NOT the score (AlgoPerf issue #622)
    assert median_of_best({0: [5.0, 3.0], 1: [INF, INF], 2: [4.0, 9.0]}) == 4.0
    assert median_of_best({0: [INF], 1: [INF], 2: [1.0]}) == INF
    assert median_of_best({}) == INF


def test_fraction_solved() -> None:
    assert fraction_solved(TIMES["A"]) == 0.75
    assert fraction_solved(TIMES["C"]) == 0.5


def test_scoreboard_from_runs_uses_units_and_studies() -> None:
    runs = [
        # optimizer X on w: study 0 best 100 steps / 300 grad evals, study 1 misses, study 2 best 200 / 200
        FakeRun("w", "X", 0, 0, True, 100, 300, 1.0),
        FakeRun("w", "X", 0, 1, True, 150, 150, 2.0),
        FakeRun("w", "X", 1, 0, False, None, None, None),
        FakeRun("w", "X", 2, 0, True, 200, 200, 0.5),
        FakeRun("w", "Y", 0, 0, True, 120, 120, 3.0),
    ]
    steps = scoreboard(runs, "steps")
    assert steps.times["X"]["w"] == 200.0  # bests per study: 100, inf, 200 -> median 200
    grads = scoreboard(runs, "grad_evals")
    assert grads.times["X"]["w"] == 200.0  # bests: 150, inf, 200 -> median 200
    secs = scoreboard(runs, "seconds")
    assert secs.times["X"]["w"] == 1.0  # bests: 1.0, inf, 0.5 -> median 1.0
    assert steps.ratios["Y"]["w"] == pytest.approx(120 / 120)
    assert steps.ratios["X"]["w"] == pytest.approx(200 / 120)
    assert steps.ranking()[0] == "Y"
    assert run_time(runs[2], "steps") == INF


def test_missing_workload_counts_as_miss() -> None:
    runs = [FakeRun("w1", "X", 0, 0, True, 10, 10, 1.0), FakeRun("w2", "Y", 0, 0, True, 10, 10, 1.0)]
    board = scoreboard(runs, "steps")
    assert board.times["X"]["w2"] == INF
    assert board.scores == {"X": 0.5, "Y": 0.5}
    assert board.solved == {"X": 0.5, "Y": 0.5}
