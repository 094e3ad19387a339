"""``pip install steepest`` into a fresh virtual environment: torch, numpy and steepest, nothing else.

Slow (it installs torch and builds the checkout): ``pytest -m slow tests/test_install.py``. The
venv is a plain one (no ``--system-site-packages``), so only what the install pulls in is there.
torch is installed first, with the version pinned as in the README's commands, and its own
distributions are recorded; installing the checkout may then add numpy and steepest only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"
#: Not copied into the build tree: VCS data, caches and local build outputs.
_IGNORE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", "bench-results",
                                 "site", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis")


def _run(*args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["COLUMNS"] = "1000"
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env)


def _distributions(python: Path) -> set[str]:
    """Normalized names of the distributions installed in ``python``'s environment, pip's own excluded."""
    proc = _run(python, "-m", "pip", "list", "--format=freeze", "--exclude-editable")
    assert proc.returncode == 0, proc.stderr
    names = {re.split(r"[=@ ]", line, maxsplit=1)[0] for line in proc.stdout.splitlines() if line.strip()}
    return {re.sub(r"[-_.]+", "-", n).lower() for n in names} - {"pip", "setuptools", "wheel"}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_pip_install_pulls_torch_numpy_and_steepest_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    proc = _run(sys.executable, "-m", "venv", venv)
    assert proc.returncode == 0, proc.stderr
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    proc = _run(python, "-m", "pip", "install", "-q", TORCH)
    assert proc.returncode == 0, proc.stderr
    torch_set = _distributions(python)
    assert "torch" in torch_set

    source = tmp_path / "steepest-src"  # a copy: building in the checkout would leave build/ and egg-info there
    shutil.copytree(ROOT, source, ignore=_IGNORE)
    proc = _run(python, "-m", "pip", "install", "-q", source)
    assert proc.returncode == 0, proc.stderr
    added = _distributions(python) - torch_set
    extra = sorted(added - {"numpy", "steepest"})
    assert added == {"numpy", "steepest"}, f"pip install steepest also installed {extra}"

    # The core works there: import, build and step optimizers, the registry commands.
    code = (
        "import torch, steepest\n"
        "model, x = torch.nn.Linear(4, 2), torch.randn(3, 4)\n"
        "def closure():\n"
        "    opt.zero_grad()\n"
        "    loss = model(x).square().mean()\n"
        "    if torch.is_grad_enabled():\n"
        "        loss.backward()\n"
        "    return loss\n"
        "for key in steepest.list_optimizers(family='sign'):\n"
        "    opt = steepest.create_optimizer(key, model.parameters(), lr=1e-3)\n"
        "    opt.step(closure)\n"
        "print('ok', steepest.__version__, steepest.__file__)\n"
    )
    proc = _run(python, "-c", code, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ") and str(venv) in proc.stdout  # the installed copy, not the checkout
    proc = _run(bin_dir / "steepest", "info", "lion", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Symbolic Discovery of Optimization Algorithms" in proc.stdout
    proc = _run(bin_dir / "steepest", "list", timeout=300)
    assert proc.returncode == 0 and "steepest.AdamMini" in proc.stdout, proc.stderr

    # What needs the bench extra says so, in one line.
    proc = _run(bin_dir / "steepest", "demo", "--epochs", "1", "--quiet", timeout=300)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines() == [
        'steepest: error: steepest demo needs scikit-learn, which the base install leaves out: '
        'pip install "steepest[bench]"'
    ]
