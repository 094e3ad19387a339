"""Sweep configs: wrong keys and values are named; unknown names list the valid ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from steepest.bench.config import ConfigError, config_from_dict, load_config, shipped_configs
from steepest.bench.sweep import expand
from steepest.bench.workloads import workload_names
from steepest.cli import main

BASE = {"workloads": ["least_squares"], "optimizers": ["adamw"]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**BASE, "sedes": [0]}, "unknown key 'sedes'"),
        ({**BASE, "tuning": {"trails": 3}}, "unknown key 'tuning.trails'"),
        ({**BASE, "output": {"unit": "hours"}}, "output.unit must be one of"),
        ({**BASE, "size": "huge"}, "size must be one of"),
        ({**BASE, "mode": "self"}, "mode must be one of"),
        ({**BASE, "seeds": [0, 0]}, "seeds has duplicates"),
        ({**BASE, "seeds": [-1]}, "seeds must be"),
        ({**BASE, "jobs": 0}, "jobs must be at least 1"),
        ({**BASE, "threads": "2"}, "threads must be an integer"),
        ({**BASE, "max_steps": True}, "max_steps must be an integer"),
        ({**BASE, "hyperparameters": {"adamw": 3}}, "hyperparameters.adamw must be a table"),
        ({"optimizers": ["adamw"]}, "missing key 'workloads'"),
        ({**BASE, "workloads": []}, "workloads must be a non-empty list"),
    ],
)
def test_invalid_config_names_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, "cfg.toml")


def test_unknown_names_list_the_valid_ones() -> None:
    config = config_from_dict({**BASE, "optimizers": ["adamw", "adamm"]})
    with pytest.raises(ConfigError, match=r"unknown \['adamm'\]; valid optimizers: .*adamw.*sgd"):
        config.check_names()
    config = config_from_dict({**BASE, "workloads": ["least_squares", "nope"]})
    with pytest.raises(ConfigError, match=r"unknown \['nope'\]; valid workloads: .*least_squares"):
        config.check_names()
    assert config.check_names(dry_run=True) == [
        f"skipping workload 'nope': not registered (valid: {', '.join(workload_names())})"
    ]
    config = config_from_dict({**BASE, "hyperparameters": {"adamw": {"learning_rate": 0.1}}})
    with pytest.raises(ConfigError, match=r"hyperparameters.adamw.learning_rate: .* accepted: lr"):
        config.check_names()


def test_shipped_quick_config_loads_and_toml_errors_are_reported(tmp_path: Path) -> None:
    assert "quick" in shipped_configs()
    quick = load_config("quick")
    assert quick.size == "quick" and "least_squares" in quick.workloads
    bad = tmp_path / "bad.toml"
    bad.write_text("workloads = [\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="shipped: quick"):
        load_config(tmp_path / "missing.toml")


def test_expand_tune_mode_is_n_trials_by_k_studies() -> None:
    config = config_from_dict({**BASE, "size": "tiny", "mode": "tune", "tuning": {"trials": 3, "studies": 2},
                               "hyperparameters": {"adamw": {"weight_decay": 0.0}}})
    specs = expand(config)
    assert [(s.study, s.trial) for s in specs] == [(k, i) for k in range(2) for i in range(3)]
    assert all(s.hyperparameters["weight_decay"] == 0.0 for s in specs)  # fixed: removed from the search
    assert len({s.hyperparameters["lr"] for s in specs}) == 6
    assert expand(config) == specs  # quasi-random points are reproducible (resume finds the same keys)
    lows = [s.hyperparameters["lr"] for s in specs]
    assert all(1e-4 <= lr <= 1e-1 for lr in lows)  # adamw's registry search space


def test_cli_reports_bad_config_and_dry_run_skips_unregistered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'size = "tiny"\nworkloads = ["least_squares", "zipf_not_yet"]\noptimizers = ["adamw"]\n'
        f'[output]\nstore = "{tmp_path / "r.db"}"\n'
    )
    assert main(["bench", "run", "--config", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "skipping workload 'zipf_not_yet'" in out and "1 runs, 0 already in" in out
    assert main(["bench", "run", "--config", str(cfg), "--no-progress"]) == 2
    assert "unknown ['zipf_not_yet']; valid workloads:" in capsys.readouterr().err
    assert main(["bench", "run", "--config", str(cfg), "-w", "least_squares", "-o", "adamx"]) == 2
    assert "valid optimizers:" in capsys.readouterr().err
    cfg.write_text('workloads = ["least_squares"]\noptimizers = ["adamw"]\nseed = [1]\n')
    assert main(["bench", "run", "--config", str(cfg)]) == 2
    assert "unknown key 'seed'" in capsys.readouterr().err
