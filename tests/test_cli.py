"""The ``steepest`` command: list, info, demo, errors, and ``python -m steepest``."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
import torch

from steepest.cli import main
from steepest.optim import REGISTRY, Capabilities, Paper, RegistryEntry, optimizer_info


@pytest.fixture(autouse=True)
def _wide_output(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep every table row on one line whatever the cell lengths, so assertions can grep.
    monkeypatch.setenv("COLUMNS", "1000")


def _row_keys(out: str) -> list[str]:
    """First cell of every table body row."""
    return [m.group(1) for m in re.finditer(r"^│ (\S+)\s+│", out, flags=re.MULTILINE)]


def test_list_shows_every_registry_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert sorted(_row_keys(out)) == sorted(REGISTRY)
    for entry in REGISTRY.values():
        assert entry.cls.__name__ in out
        assert entry.paper.authors in out


def test_list_family_filters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--family", "sign"]) == 0
    keys = _row_keys(capsys.readouterr().out)
    assert "lion" in keys
    assert keys == [k for k, e in REGISTRY.items() if "sign" in e.families]


def test_list_unknown_family_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["list", "--family", "no-such-family"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_info_lion_shows_paper_defaults_and_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "lion"]) == 0
    out = capsys.readouterr().out
    assert "Symbolic Discovery of Optimization Algorithms" in out
    assert "arXiv:2302.06675" in out
    assert "NeurIPS" in out
    assert "lr=0.0001" in out
    assert "betas=(0.9, 0.99)" in out
    assert "weight_decay=0.0" in out
    assert "exp_avg (like the parameter)" in out
    assert "closure: no" in out
    assert "sparse gradients: no" in out
    assert "lr=0.0003, weight_decay=0.1" in out  # suggested
    assert "Lion (EvoLved Sign Momentum)." in out  # first docstring paragraph
    assert optimizer_info("lion").update_rule in out


@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_info_every_entry(key: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", key]) == 0
    out = capsys.readouterr().out
    entry = REGISTRY[key]
    assert entry.paper.title in out
    for name, default in entry.defaults().items():
        assert f"{name}={default!r}" in out


@pytest.mark.parametrize(
    "argv", [["info", "no-such-opt"], ["demo", "--optimizer", "no-such-opt", "--quiet"]], ids=["info", "demo"]
)
def test_unknown_optimizer_exits_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "unknown optimizer 'no-such-opt'" in lines[0]
    for key in REGISTRY:
        assert key in lines[0]


@pytest.mark.parametrize(
    "argv",
    [["--hp", "no_such_hp=1"], ["--lr", "-1"], ["--epochs", "0"], ["--hp", "novalue"]],
    ids=["unknown-hp", "negative-lr", "zero-epochs", "malformed-hp"],
)
def test_bad_demo_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status: object
    try:
        status = main(["demo", "--quiet", *argv])
    except SystemExit as exc:  # argparse rejects malformed options itself
        status = exc.code
    assert status == 2
    captured = capsys.readouterr()
    assert "error" in captured.err
    assert "digits" not in captured.out  # failed before any training


@pytest.mark.timeout(300)
def test_demo_json_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--optimizer", "lion", "--epochs", "3", "--seed", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epochs"] == 3 and result["seed"] == 1
    runs = [result["optimizer"], result["baseline"]]
    assert [run["key"] for run in runs] == ["lion", "adamw"]
    assert runs[0]["hyperparameters"] == dict(REGISTRY["lion"].suggested)
    assert runs[1]["hyperparameters"] == dict(REGISTRY["adamw"].suggested)
    for run in runs:
        for field in ("train_loss", "test_loss", "test_accuracy", "wall_time_s"):
            assert math.isfinite(run[field]), (run["key"], field)
        assert run["test_accuracy"] > 0.2  # chance is 0.1
        assert run["steps"] == 3 * math.ceil(result["train_size"] / result["batch_size"])
    # Exact memory (float32): Lion keeps one buffer per parameter entry, AdamW two, plus a
    # scalar step per parameter tensor (2 weights, 2 biases).
    n_params = 64 * 64 + 64 + 64 * 10 + 10
    assert runs[0]["state_bytes"] == 4 * n_params
    assert runs[1]["state_bytes"] == 8 * n_params + 4 * 4


@pytest.mark.timeout(300)
def test_demo_table_and_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "--optimizer", "lion", "--epochs", "2", "--lr", "1e-3", "--quiet"]
    argv += ["--hp", "betas=(0.95, 0.98)"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "lion: lr=0.001, weight_decay=0.1, betas=(0.95, 0.98)" in out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if cells[0] in ("lion", "adamw") and len(cells) == 6:
            rows[cells[0]] = cells
    assert set(rows) == {"lion", "adamw"}
    for _key, train_loss, test_loss, accuracy, state, seconds in rows.values():
        assert math.isfinite(float(train_loss)) and math.isfinite(float(test_loss))
        assert float(accuracy.rstrip("%")) > 20.0
        assert int(state.replace(",", "")) > 0
        assert float(seconds) >= 0.0
    assert "lion / adamw: state 0.50x" in out


@pytest.mark.timeout(300)
def test_demo_threads_option(capsys: pytest.CaptureFixture[str]) -> None:
    before = torch.get_num_threads()
    try:
        assert main(["demo", "--epochs", "1", "--threads", "1", "--json"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert json.loads(capsys.readouterr().out)["epochs"] == 1


def test_demo_result_is_deterministic() -> None:
    from steepest.demo import run_demo

    first = run_demo("sgd", epochs=1, seed=3, quiet=True)
    second = run_demo("sgd", epochs=1, seed=3, quiet=True)
    for a, b in zip(first.runs, second.runs, strict=True):
        assert (a.train_loss, a.test_loss, a.test_accuracy) == (b.train_loss, b.test_loss, b.test_accuracy)


class _ClosureSGD(torch.optim.SGD):
    """SGD that insists on a closure and on gradients built with ``create_graph=True``."""

    capabilities = Capabilities(requires_closure=True, needs_create_graph=True)
    steps = 0

    def step(self, closure=None):  # type: ignore[no-untyped-def,override]
        if closure is None:
            raise RuntimeError("closure required")
        with torch.enable_grad():
            loss = closure()
        params = [p for g in self.param_groups for p in g["params"]]
        assert all(p.grad is not None and p.grad.requires_grad for p in params)
        type(self).steps += 1
        super().step()
        return loss


class _ForwardOnly(torch.optim.SGD):
    """A zeroth-order stand-in: evaluates the closure under no_grad and never reads gradients."""

    capabilities = Capabilities(requires_closure=True)
    steps = 0

    def step(self, closure=None):  # type: ignore[no-untyped-def,override]
        if closure is None:
            raise RuntimeError("closure required")
        with torch.no_grad():
            loss = closure()
            assert all(p.grad is None for g in self.param_groups for p in g["params"])
            for g in self.param_groups:
                for p in g["params"]:
                    p.mul_(0.999)
        type(self).steps += 1
        return loss


@pytest.mark.timeout(300)
@pytest.mark.parametrize("cls", [_ClosureSGD, _ForwardOnly])
def test_demo_passes_a_closure_when_required(
    cls: type[torch.optim.SGD], monkeypatch: pytest.MonkeyPatch
) -> None:
    from steepest.demo import run_demo

    entry = RegistryEntry(
        key="needs_closure",
        cls=cls,
        families=("baseline",),
        paper=Paper("A test double", "Nobody", 2000),
        update_rule="p <- p - lr*g",
        suggested={"lr": 0.05},
    )
    monkeypatch.setitem(REGISTRY, entry.key, entry)  # type: ignore[index]
    monkeypatch.setattr(cls, "steps", 0)
    result = run_demo("needs_closure", epochs=1, quiet=True)
    assert cls.steps == result.optimizer.steps > 0
    assert math.isfinite(result.optimizer.train_loss)


def test_python_dash_m_steepest() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "steepest", "info", "no-such-opt"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"steepest: error: unknown optimizer 'no-such-opt'; known: {', '.join(sorted(REGISTRY))}"
    ]
