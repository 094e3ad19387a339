"""Sweep configuration: a TOML file (read with :mod:`tomllib`) instead of dozens of flags.

Layout (every key optional except ``workloads`` and ``optimizers``)::

    name = "quick"                  # stored with every run; the report can filter on it
    size = "quick"                  # tiny | quick | full
    workloads = ["least_squares", "zipf_softmax"]
    optimizers = ["adamw", "sgd", "sign_sgd"]
    seeds = [0, 1]
    mode = "defaults"               # defaults (registry `suggested`) | tune (AlgoPerf external tuning)
    max_steps = 500                 # step-budget override (default: each workload's budget)
    stop_at_target = true           # end a run at its first evaluation meeting the target
    threads = 1                     # torch threads per run
    jobs = 1                        # runs in parallel (local process pool)
    executor = "local"              # local (process pool) | ray (one Ray task per run)
    address = "auto"                # executor = "ray": the cluster to join ("auto", "host:port", "local")

    [tuning]                        # mode = "tune" only
    trials = 5                      # per study (AlgoPerf: 5)
    studies = 3                     # AlgoPerf: 3

    [hyperparameters.sgd]           # fixed hyperparameters of one optimizer (override `suggested`;
    lr = 0.05                       # in tune mode they are removed from the search)

    [output]
    store = "bench-results/results.db"   # a path (SQLite) or any SQLAlchemy URL
    report = "bench-results/report"
    unit = "grad_evals"             # steps | grad_evals | seconds: the unit of the headline scores

A wrong key or value raises :class:`ConfigError` naming the key. The shipped configs live in
``steepest/bench/configs/`` and are found by name (``quick``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

from steepest.bench.executors import EXECUTORS, Executor
from steepest.bench.scoring import UNITS, Unit
from steepest.bench.tuning import MODES, Mode
from steepest.bench.workloads import SIZES, Size, workload_names
from steepest.optim import REGISTRY, optimizer_info


class ConfigError(ValueError):
    """An invalid sweep configuration; the message names the offending key."""


@dataclass
class SweepConfig:
    """A validated sweep: workloads x optimizers x seeds (or tuning trials) at one size."""

    workloads: list[str]
    optimizers: list[str]
    name: str = "sweep"
    size: Size = "quick"
    seeds: list[int] = field(default_factory=lambda: [0])
    mode: Mode = "defaults"
    max_steps: int | None = None
    stop_at_target: bool = True
    threads: int = 1
    jobs: int = 1
    executor: Executor = "local"
    address: str = "auto"
    trials: int = 5
    studies: int = 3
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    store: str = "bench-results/results.db"
    report: str = "bench-results/report"
    unit: Unit = "grad_evals"
    source: str = "<dict>"

    def check_names(self, dry_run: bool = False) -> list[str]:
        """Check workload and optimizer names against the registries.

        Returns:
            Messages about unregistered workloads, which a dry run skips (a real run raises instead).

        Raises:
            ConfigError: an unknown optimizer, or (unless ``dry_run``) an unknown workload; the message lists
                the valid names.
        """
        unknown_opt = [o for o in self.optimizers if o not in REGISTRY]
        if unknown_opt:
            raise ConfigError(
                f"{self.source}: optimizers: unknown {unknown_opt}; valid optimizers: {', '.join(sorted(REGISTRY))}"
            )
        for opt, hp in self.hyperparameters.items():
            if opt not in REGISTRY:
                raise ConfigError(
                    f"{self.source}: hyperparameters.{opt}: unknown optimizer; valid: {', '.join(sorted(REGISTRY))}"
                )
            accepted = optimizer_info(opt).defaults()
            for name in hp:
                if name not in accepted:
                    raise ConfigError(
                        f"{self.source}: hyperparameters.{opt}.{name}: {opt} takes no such hyperparameter; "
                        f"accepted: {', '.join(accepted)}"
                    )
        valid = workload_names()
        unknown_w = [w for w in self.workloads if w not in valid]
        if unknown_w and not dry_run:
            raise ConfigError(
                f"{self.source}: workloads: unknown {unknown_w}; valid workloads: {', '.join(valid) or '(none)'}"
            )
        return [f"skipping workload {w!r}: not registered (valid: {', '.join(valid)})" for w in unknown_w]


_TOP: dict[str, type] = {
    "name": str,
    "size": str,
    "workloads": list,
    "optimizers": list,
    "seeds": list,
    "mode": str,
    "max_steps": int,
    "stop_at_target": bool,
    "threads": int,
    "jobs": int,
    "executor": str,
    "address": str,
    "tuning": dict,
    "hyperparameters": dict,
    "output": dict,
}
_TUNING: dict[str, type] = {"trials": int, "studies": int}
_OUTPUT: dict[str, type] = {"store": str, "report": str, "unit": str}


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a table"}[kind]


def _check_table(table: dict[str, Any], schema: dict[str, type], prefix: str, source: str) -> None:
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            raise ConfigError(f"{source}: unknown key {dotted!r}; valid keys here: {', '.join(schema)}")
        kind = schema[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise ConfigError(f"{source}: {dotted} must be {_type_name(kind)}, got {value!r}")


def _positive(value: int, dotted: str, source: str) -> int:
    if value < 1:
        raise ConfigError(f"{source}: {dotted} must be at least 1, got {value}")
    return value


def _names(value: list[Any], dotted: str, source: str) -> list[str]:
    if not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: {dotted} must be a non-empty list of names, got {value!r}")
    return list(value)


def _tuples(value: Any) -> Any:
    # TOML arrays are lists; optimizers take tuples (betas).
    return tuple(value) if isinstance(value, list) else value


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> SweepConfig:
    """Validate a parsed config and build the :class:`SweepConfig` (names are checked later).

    Raises:
        ConfigError: a missing, unknown or ill-typed key, naming it.
    """
    _check_table(data, _TOP, "", source)
    for required in ("workloads", "optimizers"):
        if required not in data:
            raise ConfigError(f"{source}: missing key {required!r}")
    tuning = data.get("tuning", {})
    _check_table(tuning, _TUNING, "tuning.", source)
    output = data.get("output", {})
    _check_table(output, _OUTPUT, "output.", source)
    hyper = data.get("hyperparameters", {})
    for opt, table in hyper.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: hyperparameters.{opt} must be a table of name = value")
    size = data.get("size", "quick")
    if size not in SIZES:
        raise ConfigError(f"{source}: size must be one of {', '.join(SIZES)}, got {size!r}")
    mode = data.get("mode", "defaults")
    if mode not in MODES:
        raise ConfigError(f"{source}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    unit = output.get("unit", "grad_evals")
    if unit not in UNITS:
        raise ConfigError(f"{source}: output.unit must be one of {', '.join(UNITS)}, got {unit!r}")
    executor = data.get("executor", "local")
    if executor not in EXECUTORS:
        raise ConfigError(f"{source}: executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    seeds = data.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"{source}: seeds must be a non-empty list of non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{source}: seeds has duplicates: {seeds!r}")
    max_steps = data.get("max_steps")
    return SweepConfig(
        workloads=_names(data["workloads"], "workloads", source),
        optimizers=_names(data["optimizers"], "optimizers", source),
        name=data.get("name", "sweep"),
        size=cast(Size, size),
        seeds=list(seeds),
        mode=cast(Mode, mode),
        max_steps=_positive(max_steps, "max_steps", source) if max_steps is not None else None,
        stop_at_target=data.get("stop_at_target", True),
        threads=_positive(data.get("threads", 1), "threads", source),
        jobs=_positive(data.get("jobs", 1), "jobs", source),
        executor=cast(Executor, executor),
        address=data.get("address", "auto"),
        trials=_positive(tuning.get("trials", 5), "tuning.trials", source),
        studies=_positive(tuning.get("studies", 3), "tuning.studies", source),
        hyperparameters={k: {n: _tuples(x) for n, x in v.items()} for k, v in hyper.items()},
        store=output.get("store", "bench-results/results.db"),
        report=output.get("report", "bench-results/report"),
        unit=cast(Unit, unit),
        source=source,
    )


def shipped_configs() -> list[str]:
    """Names of the configs shipped in ``steepest/bench/configs``."""
    folder = resources.files("steepest.bench") / "configs"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_config(name_or_path: str | Path) -> SweepConfig:
    """Load a config from a TOML file, or a shipped one by name (``"quick"``).

    Raises:
        ConfigError: no such file or shipped config, invalid TOML, or an invalid key.
    """
    path = Path(name_or_path)
    if path.is_file():
        text, source = path.read_text(), str(path)
    else:
        shipped = resources.files("steepest.bench") / "configs" / f"{name_or_path}.toml"
        if not shipped.is_file():
            raise ConfigError(
                f"no config file {str(name_or_path)!r} and no shipped config of that name; "
                f"shipped: {', '.join(shipped_configs())}"
            )
        text, source = shipped.read_text(), f"{name_or_path}.toml (shipped)"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: invalid TOML: {err}") from None
    return config_from_dict(data, source)
