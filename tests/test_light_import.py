"""The base install stays light: importing steepest and using an optimizer loads no heavy module.

Everything runs in fresh interpreters (a test process has long since imported whatever other
tests needed). The first check uses the full test environment, where every extra is installed,
and reads ``sys.modules``: nothing may be imported that the core does not use. The second blocks
the extras' packages (``sys.modules[name] = None``, which makes their import fail as if they
were not installed) and checks that the core still works and that the features needing an
extra stop with an error naming it. ``tests/test_install.py`` (slow) does the same in a real
fresh virtual environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

#: Modules the core must not import: the compiler stack (imported by ``torch.compile`` only
#: when a fused step runs) and the bench extra's packages.
HEAVY = (
    "torch._inductor",
    "torch._dynamo",
    "optuna",
    "matplotlib",
    "sqlalchemy",
    "sklearn",
    "scipy",
    "rich",
    "tqdm",
)
#: Top-level packages of the bench extra (and what they pull in), blocked in the light-install checks.
BENCH_PACKAGES = ("optuna", "matplotlib", "sqlalchemy", "sklearn", "scipy", "rich", "tqdm", "mnist1d", "mlxtend")

_CORE_USE = """
import steepest
import torch

model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
for key in ("lion", "adamw", "sophia_g"):
    opt = steepest.create_optimizer(key, model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).square().mean().backward()
    opt.step()
    opt.zero_grad()
opt = steepest.Lion(model.parameters(), lr=1e-3)
from steepest.cli import main
assert main(["info", "lion"]) == 0
assert main(["list", "--family", "sign"]) == 0
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "1000"}  # table rows on one line each
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env)


def _modules_after(code: str) -> set[str]:
    proc = _run(code + "\nimport json, sys\nprint('MODULES=' + json.dumps(sorted(sys.modules)))\n")
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES=")))


def _block(packages: tuple[str, ...]) -> str:
    return "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in packages)


@pytest.fixture(scope="module")
def torch_modules() -> set[str]:
    """What ``import torch`` alone loads: not steepest's doing (torch.hub imports tqdm where installed)."""
    return _modules_after("import torch")


@pytest.fixture(scope="module")
def loaded_modules(torch_modules: set[str]) -> set[str]:
    """What steepest adds to ``import torch`` when imported, stepped and asked for ``info``."""
    return _modules_after(_CORE_USE) - torch_modules


@pytest.mark.parametrize("module", HEAVY)
def test_core_use_imports_no_heavy_module(loaded_modules: set[str], module: str) -> None:
    found = sorted(m for m in loaded_modules if m == module or m.startswith(module + "."))
    assert not found, f"import steepest / an optimizer step / steepest info imported {module}: {found[:5]}"


def test_the_check_sees_a_heavy_import(loaded_modules: set[str]) -> None:
    # The sets are read from real processes: what the core imports is there, and so is a heavy
    # module once something imports it.
    assert {"steepest", "steepest.cli", "steepest.optim.lion"} <= loaded_modules
    assert "torch" not in loaded_modules
    assert "sklearn.datasets" in _modules_after(_CORE_USE + "import sklearn.datasets")


def test_core_works_with_the_bench_extra_missing() -> None:
    proc = _run(_block(BENCH_PACKAGES) + _CORE_USE)
    assert proc.returncode == 0, proc.stderr
    assert "Symbolic Discovery of Optimization Algorithms" in proc.stdout
    assert "steepest.Lion" in proc.stdout


@pytest.mark.parametrize(
    ("argv", "needs"),
    [
        (["demo", "--epochs", "1", "--quiet"], "scikit-learn"),
        (["bench", "run", "--dry-run", "-w", "least_squares", "-o", "sgd", "--store", ":memory:"], "sqlalchemy"),
        (["bench", "list"], "rich"),
    ],
    ids=["demo", "bench-run", "bench-list"],
)
def test_commands_needing_the_extra_name_it(argv: list[str], needs: str) -> None:
    code = _block(BENCH_PACKAGES) + f"from steepest.cli import main\nraise SystemExit(main({argv!r}))\n"
    proc = _run(code)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one line, no traceback
    assert lines[0].startswith("steepest: error: ")
    assert f"needs {needs}" in lines[0]
    assert 'pip install "steepest[bench]"' in lines[0]


@pytest.mark.parametrize(
    ("code", "needs"),
    [
        ("from steepest.bench.store import ResultStore", "sqlalchemy"),
        ("from steepest.bench.tuning import sample_trials\n"
         "from steepest.optim import optimizer_info\n"
         "sample_trials(optimizer_info('lion').search_space, 2, 0)", "optuna"),
        ("from steepest.repro.ponos_backtracks import digits_data\ndigits_data()", "scikit-learn"),
    ],
    ids=["store", "tuning", "repro"],
)
def test_library_features_needing_the_extra_raise_import_error(code: str, needs: str) -> None:
    check = textwrap.dedent("""
        try:
        {body}
        except ImportError as err:
            print(type(err).__name__, err)
        else:
            print("no error")
    """).replace("{body}", textwrap.indent(code, "    "))
    proc = _run(_block(BENCH_PACKAGES) + check)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("MissingExtraError "), proc.stdout
    assert f"needs {needs}" in proc.stdout and 'pip install "steepest[bench]"' in proc.stdout
