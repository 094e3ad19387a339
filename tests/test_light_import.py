"""The base install stays light: importing steepest and using an optimizer loads no heavy module.

Everything runs in fresh interpreters (a test process has long since imported whatever other
tests needed). The first checks use the full test environment, where every extra is installed,
and read ``sys.modules``: nothing may be imported that the core does not use. What torch itself
loads is not steepest's doing and is subtracted: ``import torch`` imports tqdm where installed
(``torch.hub``), and constructing any ``torch.optim.Optimizer`` imports ``torch._dynamo`` and
``torch._inductor`` (``add_param_group`` is wrapped in ``torch._disable_dynamo``). So
``import steepest`` and ``steepest info`` are held to ``import torch``, and building and stepping
steepest's optimizers to building and stepping ``torch.optim.AdamW``. The last checks block
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
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

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

_IMPORT_AND_INFO = """
import steepest
from steepest.cli import main
assert main(["info", "lion"]) == 0
assert main(["list", "--family", "sign"]) == 0
"""
_TORCH_OPTIMIZER = """
import torch
model = torch.nn.Linear(4, 2)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
model(torch.randn(3, 4)).square().mean().backward()
opt.step()
"""
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
    # The checkout under test (as pytest's pythonpath), whatever copy of steepest is installed;
    # COLUMNS keeps table rows on one line each.
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "COLUMNS": "1000", "PYTHONPATH": path}
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
def imported_modules(torch_modules: set[str]) -> set[str]:
    """What ``import steepest`` and ``steepest info`` / ``list`` add to ``import torch``."""
    return _modules_after(_IMPORT_AND_INFO) - torch_modules


@pytest.fixture(scope="module")
def used_modules() -> set[str]:
    """What building and stepping steepest's optimizers adds to building and stepping torch's AdamW."""
    return _modules_after(_CORE_USE) - _modules_after(_TORCH_OPTIMIZER)


def _found(modules: set[str], module: str) -> list[str]:
    return sorted(m for m in modules if m == module or m.startswith(module + "."))


@pytest.mark.parametrize("module", HEAVY)
def test_import_steepest_and_info_import_no_heavy_module(imported_modules: set[str], module: str) -> None:
    found = _found(imported_modules, module)
    assert not found, f"import steepest / steepest info imported {module}: {found[:5]}"


@pytest.mark.parametrize("module", HEAVY)
def test_optimizer_steps_import_nothing_heavy_beyond_torch_optim(used_modules: set[str], module: str) -> None:
    found = _found(used_modules, module)
    assert not found, f"building and stepping steepest optimizers imported {module}: {found[:5]}"


def test_the_checks_see_what_is_imported(imported_modules: set[str], used_modules: set[str]) -> None:
    # The sets are read from real processes: what the core imports is there, and so is a heavy
    # module once something imports it.
    assert {"steepest", "steepest.cli", "steepest.optim.lion"} <= imported_modules
    assert "torch" not in imported_modules
    assert "steepest" in used_modules
    assert "sklearn.datasets" in _modules_after(_IMPORT_AND_INFO + "import sklearn.datasets")


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
