"""Step time of every registered optimizer's foreach path on a ~25M-parameter transformer shape.

Prints, per optimizer, the median [min, max] step time over repeated steps, and three ratios
measured in the same run:

* ``vs AdamW``: step time / ``torch.optim.AdamW(foreach=True)`` step time;
* ``per byte``: the same ratio after dividing each time by the bytes its update must move
  (read parameter, gradient and every state tensor; write parameter and state). The target is
  <= 1.25 for every elementwise optimizer;
* ``vs bandwidth``: step time / (bytes moved / measured copy bandwidth), i.e. how far the step
  is from the memory-bandwidth limit (1.0 = at the limit).

Before each row the script waits for the machine to be idle (``/proc/stat``), and prints the
busy fraction it saw. Run: ``python benchmarks/step_time.py [--threads 2] [--repeats 15]``.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
from dataclasses import dataclass

import torch

import steepest
from steepest.optim._registry import REGISTRY

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _machine import Timing, copy_bandwidth, time_calls, wait_for_idle


def transformer_shapes(layers: int = 5, width: int = 512, ffn: int = 2048, vocab: int = 8192) -> list[tuple[int, ...]]:
    """Embedding, per-layer attention/MLP matrices with biases and norms, and an untied head."""
    shapes: list[tuple[int, ...]] = [(vocab, width)]
    for _ in range(layers):
        shapes += [(width,), (width,)]  # attention norm weight and bias
        shapes += [(3 * width, width), (3 * width,), (width, width), (width,)]
        shapes += [(width,), (width,)]  # MLP norm
        shapes += [(ffn, width), (ffn,), (width, ffn), (width,)]
    shapes += [(width,), (width,), (vocab, width)]
    return shapes


def state_traffic_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes an update must move: read p and g, read+write each state tensor, write p."""
    total = 0
    for group in opt.param_groups:
        for p in group["params"]:
            total += 3 * p.numel() * p.element_size()
            for value in opt.state[p].values():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    total += 2 * value.numel() * value.element_size()
    return total


@dataclass
class Row:
    """One measured optimizer."""

    key: str
    timing: Timing
    traffic: int
    busy: float
    elementwise: bool


def measure(key: str, params: list[torch.nn.Parameter], repeats: int) -> Row:
    """Time ``repeats`` foreach steps of optimizer ``key`` (torch AdamW for ``adamw``)."""
    if key == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=True)
    else:
        opt = steepest.create_optimizer(key, params, **{**REGISTRY[key].suggested, "foreach": True})
    opt.step()  # create state outside the timed region
    busy = wait_for_idle()
    timing = time_calls(opt.step, repeats)
    row = Row(key, timing, state_traffic_bytes(opt), busy, REGISTRY[key].capabilities.elementwise)
    del opt
    gc.collect()
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", nargs="*", default=None, help="registry keys to measure")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    shapes = transformer_shapes()
    params = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape) * 1e-3
    n = sum(p.numel() for p in params)
    print(
        f"# {n / 1e6:.1f}M parameters in {len(params)} tensors, float32, "
        f"{args.threads} threads, torch {torch.__version__}"
    )

    wait_for_idle()
    bandwidth, bw_timing = copy_bandwidth()
    print(f"# copy bandwidth {bandwidth / 1e9:.2f} GB/s (copy of 100 MB: {bw_timing.ms()} ms)")

    keys = args.only or [k for k in REGISTRY if k != "adamw"]
    baseline = measure("adamw", params, args.repeats)
    rows = [baseline] + [measure(k, params, args.repeats) for k in keys]
    baseline_again = measure("adamw", params, args.repeats)

    header = (
        f"{'optimizer':<14} {'step ms: median [min, max]':>30} {'MB moved':>9} {'vs AdamW':>9} "
        f"{'per byte':>9} {'vs bandwidth':>12} {'busy':>5}"
    )
    print(header)
    print("-" * len(header))
    base_per_byte = baseline.timing.median / baseline.traffic
    failures = []
    for row in rows:
        ratio = row.timing.median / baseline.timing.median
        per_byte = (row.timing.median / row.traffic) / base_per_byte
        vs_bw = row.timing.median / (row.traffic / bandwidth)
        flag = ""
        if row.elementwise and row.key != "adamw" and per_byte > 1.25:
            flag = "  > 1.25"
            failures.append(row.key)
        if not row.elementwise:
            flag = "  (not elementwise)"
        print(
            f"{row.key:<14} {row.timing.ms():>30} {row.traffic / 1e6:>9.0f} {ratio:>9.2f} {per_byte:>9.2f} "
            f"{vs_bw:>12.2f} {row.busy:>5.2f}{flag}"
        )
    drift = baseline_again.timing.median / baseline.timing.median
    print(f"# AdamW re-measured at the end: {baseline_again.timing.ms()} ms ({drift:.2f}x the first measurement)")
    if failures:
        print(f"# above the 1.25x per-byte target: {', '.join(failures)}")
    else:
        print("# every elementwise optimizer is within 1.25x of AdamW-foreach per byte moved")
    return 0 if math.isfinite(drift) else 1


if __name__ == "__main__":
    raise SystemExit(main())
