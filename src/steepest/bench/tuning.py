"""Tuning protocols: defaults-only and AlgoPerf's external tuning, with Optuna drawing the trials.

* **defaults-only** (Crowded Valley's "one-shot" budget): each optimizer runs with the registry's ``suggested``
  hyperparameters (plus explicit overrides) once per seed; seed ``i`` is study ``i`` with one trial.
* **external tuning** (AlgoPerf, Dahl et al. 2023, arXiv:2306.07179): a fixed budget of ``n_trials`` points per
  study from the optimizer's registry ``search_space`` (workload-agnostic), ``n_studies`` independent studies;
  the submission's time on a workload is the median over studies of its best trial
  (:func:`steepest.bench.scoring.median_of_best`). Points are drawn by Optuna's quasi-random
  :class:`~optuna.samplers.QMCSampler` (scrambled Sobol, seeded by the study id), as AlgoPerf draws quasi-random
  points; a QMC draw does not depend on earlier results, so every trial of a study is known up front and a sweep
  can run them in parallel, resume, and still reproduce the same points.

:func:`tune` is the sequential Python API (any Optuna sampler, ask/tell, stops a trial at the target).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from steepest._extras import require
from steepest.bench.runner import RunResult, RunSpec, run
from steepest.bench.scoring import INF, Unit, median_of_best, run_time
from steepest.bench.workloads import Size
from steepest.optim import optimizer_info
from steepest.optim._registry import SearchDim

Mode = Literal["defaults", "tune"]
MODES: tuple[Mode, ...] = ("defaults", "tune")


_PRIMITIVE = (type(None), bool, int, float, str)


def _primitive_choices(dim: SearchDim) -> bool:
    return all(isinstance(c, _PRIMITIVE) for c in dim.choices)


def _distribution(dim: SearchDim) -> Any:
    distributions = require("optuna.distributions", "hyperparameter tuning")
    CategoricalDistribution, FloatDistribution = distributions.CategoricalDistribution, distributions.FloatDistribution
    if dim.kind == "choice":
        # Optuna's categoricals hold primitives only; other choices (betas tuples) are drawn by index.
        return CategoricalDistribution(dim.choices if _primitive_choices(dim) else tuple(range(len(dim.choices))))
    assert dim.low is not None and dim.high is not None
    return FloatDistribution(float(dim.low), float(dim.high), log=dim.kind == "log")


def _decode(space: Mapping[str, SearchDim], params: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's values as hyperparameters (choice indices back to the choices)."""
    out = {}
    for name, value in params.items():
        dim = space[name]
        out[name] = dim.choices[value] if dim.kind == "choice" and not _primitive_choices(dim) else value
    return out


def search_space(optimizer: str) -> dict[str, SearchDim]:
    """The registry's search space of ``optimizer`` (raises ``KeyError`` for an unknown key)."""
    return dict(optimizer_info(optimizer).search_space)


def suggested(optimizer: str) -> dict[str, Any]:
    """The registry's suggested hyperparameters of ``optimizer``."""
    return dict(optimizer_info(optimizer).suggested)


def _quiet_optuna() -> Any:
    optuna = require("optuna", "hyperparameter tuning")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def sample_trials(space: Mapping[str, SearchDim], n_trials: int, study_seed: int) -> list[dict[str, Any]]:
    """``n_trials`` quasi-random points of ``space`` (Optuna QMC, scrambled Sobol seeded by ``study_seed``).

    The same arguments always give the same points.

    Raises:
        ValueError: ``n_trials < 1``.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if not space:
        return [{} for _ in range(n_trials)]
    optuna = _quiet_optuna()
    distributions = {name: _distribution(dim) for name, dim in space.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # QMCSampler is marked experimental; categoricals fall back to random
        study = optuna.create_study(sampler=optuna.samplers.QMCSampler(seed=study_seed, scramble=True))
        points = []
        for _ in range(n_trials):
            trial = study.ask(distributions)
            points.append(_decode(space, trial.params))
            study.tell(trial, 0.0)
    return points


def defaults_specs(
    workload: str,
    size: Size,
    optimizer: str,
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
) -> list[RunSpec]:
    """Defaults-only runs: suggested hyperparameters (plus ``overrides``), seed ``seeds[i]`` as study ``i``."""
    hp = {**suggested(optimizer), **(overrides or {})}
    return [
        RunSpec(workload, size, optimizer, dict(hp), seed=seed, study=i, trial=0, max_steps=max_steps)
        for i, seed in enumerate(seeds)
    ]


def external_tuning_specs(
    workload: str,
    size: Size,
    optimizer: str,
    n_trials: int,
    n_studies: int,
    base_seed: int = 0,
    fixed: Mapping[str, Any] | None = None,
    max_steps: int | None = None,
) -> list[RunSpec]:
    """AlgoPerf external tuning: ``n_studies`` x ``n_trials`` runs over the registry search space.

    Study ``k`` draws its points with QMC seed ``k`` (the same points on every workload: the search is
    workload-agnostic) and trial ``i`` of study ``k`` trains with seed ``base_seed + 1000 k + i``. ``fixed``
    hyperparameters are added to every point and removed from the search.
    """
    if n_studies < 1:
        raise ValueError(f"n_studies must be at least 1, got {n_studies}")
    fixed = dict(fixed or {})
    space = {k: v for k, v in search_space(optimizer).items() if k not in fixed}
    specs = []
    for k in range(n_studies):
        for i, point in enumerate(sample_trials(space, n_trials, study_seed=k)):
            specs.append(
                RunSpec(
                    workload,
                    size,
                    optimizer,
                    {**point, **fixed},
                    seed=base_seed + 1000 * k + i,
                    study=k,
                    trial=i,
                    max_steps=max_steps,
                )
            )
    return specs


@dataclass
class TuningResult:
    """Outcome of :func:`tune`: every trial's result and the AlgoPerf time (median of the studies' best)."""

    results: list[RunResult]
    time: float
    best: RunResult | None


def tune(
    workload: str,
    size: Size,
    optimizer: str,
    n_trials: int,
    n_studies: int = 1,
    unit: Unit = "grad_evals",
    sampler: Callable[[int], Any] | None = None,
    max_steps: int | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> TuningResult:
    """Tune ``optimizer`` on ``workload`` sequentially with Optuna ask/tell, ``n_trials`` per study.

    Each trial runs to the target or the budget; its objective is the time-to-target in ``unit`` (infinity
    when missed). ``sampler(study_id)`` builds the Optuna sampler (default: seeded QMC, as the sweep uses).
    """
    optuna = _quiet_optuna()
    space = search_space(optimizer)
    distributions = {name: _distribution(dim) for name, dim in space.items()}
    results: list[RunResult] = []
    by_study: dict[int, list[float]] = {}
    best: RunResult | None = None
    for k in range(n_studies):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chosen = sampler(k) if sampler is not None else optuna.samplers.QMCSampler(seed=k, scramble=True)
            study = optuna.create_study(sampler=chosen, direction="minimize")
            for i in range(n_trials):
                trial = study.ask(distributions)
                hp = _decode(space, trial.params)
                spec = RunSpec(workload, size, optimizer, hp, seed=1000 * k + i, study=k, trial=i, max_steps=max_steps)
                result = run(spec, stop_at_target=True)
                value = run_time(_AsRun(result), unit)
                study.tell(trial, value if value != INF else float("inf"))
                results.append(result)
                by_study.setdefault(k, []).append(value)
                if on_result is not None:
                    on_result(result)
                if value != INF and (best is None or value < run_time(_AsRun(best), unit)):
                    best = result
    return TuningResult(results, median_of_best(by_study), best)


class _AsRun:
    """Adapts a :class:`RunResult` to what :func:`run_time` reads."""

    def __init__(self, result: RunResult) -> None:
        self.workload = result.spec.workload
        self.optimizer = result.spec.optimizer
        self.study = result.spec.study
        self.trial = result.spec.trial
        self.reached = result.reached
        self.steps_to_target = result.steps_to_target
        self.grad_evals_to_target = result.grad_evals_to_target
        self.time_to_target_s = result.time_to_target_s
