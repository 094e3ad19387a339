"""Importing steepest and its framework-free integration modules loads no framework (DESIGN.md)."""

from __future__ import annotations

import subprocess
import sys


def test_integrations_import_their_frameworks_lazily() -> None:
    code = (
        "import sys, steepest, steepest.integrations, steepest.integrations.lightning, steepest.integrations.timm\n"
        "print(sorted(m for m in ('transformers', 'lightning', 'pytorch_lightning', 'timm', 'accelerate') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
