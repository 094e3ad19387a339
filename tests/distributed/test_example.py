"""The README's DDP example runs end to end on 2 processes and compresses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ddp_compressed.py"


def test_ddp_example_trains_and_reports_compression() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--hook", "sign", "--steps", "30"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [float(v) for v in re.findall(r"loss (\d+\.\d+)", proc.stdout)]
    assert losses and losses[-1] < losses[0]
    ratio = re.search(r"\((\d+\.\d+)x\)", proc.stdout)
    assert ratio is not None and float(ratio.group(1)) > 10.0, proc.stdout
