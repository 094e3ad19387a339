"""What ``import steepest`` costs over ``import torch``: wall time and peak resident memory.

Each sample is a fresh interpreter that times its own import statement(s) with
``time.perf_counter`` and reports its peak RSS (``ru_maxrss``), so interpreter start-up is
excluded from the time and common to every row's memory. Rows run in rounds, one sample of each
row per round in alternating order, each after waiting for an idle machine (``/proc/stat``), and
the cost of steepest is taken per round (its sample minus the same round's ``import torch``), so
drifts of a shared machine hit both alike. One warm-up round (page cache) is not counted.

Rows: ``import torch``; ``import torch; import steepest``; the same plus building a Lion and
taking one step (what a user's first step adds); ``steepest info lion`` through the CLI entry;
and, for comparison with the step row, torch's own AdamW built and stepped (constructing any
``torch.optim.Optimizer`` imports ``torch._dynamo``, about 1 s and 70 MiB: torch's cost, not ours).

Targets (issue #24): the import adds at most 0.3 s and 15 MiB over ``import torch``.

Run: ``python benchmarks/import_cost.py [--runs 15]`` on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _machine import Timing, wait_for_idle

TARGET_SECONDS = 0.3
TARGET_MIB = 15.0

_TORCH = "import torch"
_STEEPEST = "import torch\nimport steepest"
_STEP = (
    "import torch\nimport steepest\n"
    "model = torch.nn.Linear(64, 64)\n"
    "opt = steepest.Lion(model.parameters(), lr=1e-4)\n"
    "model(torch.randn(8, 64)).square().mean().backward()\n"
    "opt.step()"
)
_TORCH_STEP = (
    "import torch\n"
    "model = torch.nn.Linear(64, 64)\n"
    "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
    "model(torch.randn(8, 64)).square().mean().backward()\n"
    "opt.step()"
)
_INFO = "import torch\nimport io, contextlib\nfrom steepest.cli import main\n" \
        "with contextlib.redirect_stdout(io.StringIO()):\n    main(['info', 'lion'])"

ROWS: dict[str, str] = {
    "import torch": _TORCH,
    "import torch; import steepest": _STEEPEST,
    "  + Lion built and stepped": _STEP,
    "  steepest info lion (CLI)": _INFO,
    "import torch; AdamW built and stepped": _TORCH_STEP,
}

_CHILD = """
import resource, time, json
start = time.perf_counter()
exec(compile({code!r}, "<measured>", "exec"))
elapsed = time.perf_counter() - start
print(json.dumps({{"seconds": elapsed, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def sample(code: str) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of ``code`` run in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", _CHILD.format(code=code)], capture_output=True, text=True,
                          timeout=300, check=True)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(data["seconds"]), data["maxrss_kib"] / 1024.0


def _mib(t: Timing) -> str:
    return f"{t.median:8.1f} [{t.low:.1f}, {t.high:.1f}]"


def _s(t: Timing) -> str:
    return f"{t.median:7.3f} [{t.low:.3f}, {t.high:.3f}]"


def main() -> None:
    """Measure every row ``--runs`` times and print medians [min, max] and steepest's cost over torch."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="rounds counted (default: %(default)s)")
    parser.add_argument("--idle", type=float, default=0.15, help="busy fraction to wait below before each sample")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    seconds: dict[str, list[float]] = {name: [] for name in ROWS}
    mib: dict[str, list[float]] = {name: [] for name in ROWS}
    busy: list[float] = []
    names = list(ROWS)
    for round_ in range(args.runs + 1):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            busy.append(wait_for_idle(args.idle))
            s, m = sample(ROWS[name])
            if round_ > 0:  # round 0 warms the page cache
                seconds[name].append(s)
                mib[name].append(m)

    print(f"{args.runs} rounds, python {sys.version.split()[0]}, machine busy before samples: "
          f"median {statistics.median(busy):.2f}, max {max(busy):.2f}")
    print(f"{'row':38} {'seconds: median [min, max]':>30} {'peak RSS MiB: median [min, max]':>34}")
    for name in names:
        print(f"{name:38} {_s(Timing.of(seconds[name])):>30} {_mib(Timing.of(mib[name])):>34}")

    print("\nsteepest's cost per round (median [min, max]), against the targets:")
    pairs = [(name, "import torch") for name in names[1:] if ROWS[name] != _STEP]
    pairs.append(("  + Lion built and stepped", "import torch; AdamW built and stepped"))
    for name, base in pairs:
        base_s, base_m = seconds[base], mib[base]
        ds = Timing.of([a - b for a, b in zip(seconds[name], base_s, strict=True)])
        dm = Timing.of([a - b for a, b in zip(mib[name], base_m, strict=True)])
        ratio = Timing.of([a / b for a, b in zip(seconds[name], base_s, strict=True)])
        label = f"{name.strip()} - {base}"
        verdict = ""
        if ROWS[name] == _STEEPEST:
            met = ds.median <= TARGET_SECONDS and dm.median <= TARGET_MIB
            verdict = f"  {'meets' if met else 'misses'} the target (<= {TARGET_SECONDS} s, <= {TARGET_MIB:g} MiB)"
        print(f"{label:66} +{_s(ds)} s ({ratio.ratio()}x)  +{_mib(dm)} MiB{verdict}")


if __name__ == "__main__":
    main()
