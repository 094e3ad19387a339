"""Tuning: Optuna draws reproducible points inside every registry search space; AlgoPerf's median-of-best."""

from __future__ import annotations

import math

import pytest
import torch

import steepest
from steepest.bench.scoring import median_of_best, run_time
from steepest.bench.tuning import _AsRun, defaults_specs, sample_trials, search_space, suggested, tune
from steepest.optim import REGISTRY, create_optimizer


@pytest.mark.filterwarnings("ignore:AdamMini:UserWarning")
@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_every_search_space_samples_valid_hyperparameters(key: str) -> None:
    space = search_space(key)
    points = sample_trials(space, 4, study_seed=0)
    assert points == sample_trials(space, 4, study_seed=0)
    assert len(points) == 4
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    for point in points:
        assert set(point) == set(space)
        for name, value in point.items():
            dim = space[name]
            if dim.kind == "choice":
                assert value in dim.choices
            else:
                assert dim.low is not None and dim.high is not None
                assert dim.low <= value <= dim.high
        params, extra = steepest.optimizer_params(key, model)
        create_optimizer(key, params, **{**extra, **point})  # the registry's ranges are accepted


def test_defaults_mode_uses_suggested_and_one_study_per_seed() -> None:
    specs = defaults_specs("least_squares", "tiny", "sgd", [3, 5], {"lr": 0.2})
    assert [(s.seed, s.study, s.trial) for s in specs] == [(3, 0, 0), (5, 1, 0)]
    assert specs[0].hyperparameters == {**suggested("sgd"), "lr": 0.2}


def test_tune_scores_median_over_studies_of_best_trial() -> None:
    result = tune("least_squares", "tiny", "sgd", n_trials=3, n_studies=2, unit="steps")
    assert len(result.results) == 6
    by_study: dict[int, list[float]] = {}
    for r in result.results:
        by_study.setdefault(r.spec.study, []).append(run_time(_AsRun(r), "steps"))
    assert result.time == median_of_best(by_study)
    if math.isfinite(result.time):
        assert result.best is not None and result.best.reached
    assert {r.spec.trial for r in result.results} == {0, 1, 2}
