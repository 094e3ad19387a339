"""Peak memory of a MeZO step vs an inference forward pass vs a backprop AdamW step (CPU).

Each measurement runs in its own process: import torch, read the resident set size (RSS),
build the model and the batch, reset the RSS high-water mark (``echo 5 > /proc/self/clear_refs``),
run the operation twice (so lazily created state, such as AdamW's moments, exists in the measured
call), and read ``VmHWM``. The peak is ``VmHWM - RSS after import`` (and after building a
throwaway MeZO and AdamW, which loads torch's lazily imported modules): parameters, optimizer
state, gradients, activations and temporaries; the interpreter and torch's libraries are out.

Prints the medians (with min and max over the repeats) and the ratios MeZO / inference
(the paper's claim: about 1) and AdamW / inference.

Run: ``python benchmarks/zo_memory.py [--repeats 3] [--layers 12] [--dim 512]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes."""
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", text)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1)) * 1024


def _reset_high_water_mark() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _worker(mode: str, args: argparse.Namespace) -> dict[str, float]:
    import torch
    from torch import nn

    import steepest

    torch.set_num_threads(1)
    # The first optimizer built imports torch's lazily loaded modules (~70 MiB of code): build
    # throwaway ones first, in every mode, so the baseline holds the same libraries in all.
    dummy = torch.nn.Parameter(torch.zeros(1))
    steepest.MeZO([dummy]).step(lambda: dummy.sum())
    adamw_dummy = torch.optim.AdamW([dummy])
    dummy.grad = torch.zeros(1)
    adamw_dummy.step()
    base = _status("VmRSS")
    torch.manual_seed(0)

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(args.vocab, args.dim)
            self.pos = nn.Parameter(torch.zeros(args.context, args.dim))
            layer = nn.TransformerEncoderLayer(
                args.dim, args.heads, 4 * args.dim, dropout=0.0, batch_first=True, norm_first=True
            )
            self.blocks = nn.TransformerEncoder(layer, args.layers, enable_nested_tensor=False)
            self.head = nn.Linear(args.dim, args.vocab)
            self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(args.context))

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            h = self.embed(tokens) + self.pos
            return self.head(self.blocks(h, mask=self.mask, is_causal=True))

    model = GPT().eval()
    tokens = torch.randint(0, args.vocab, (args.batch, args.context + 1))

    def loss() -> torch.Tensor:
        logits = model(tokens[:, :-1])
        return nn.functional.cross_entropy(logits.reshape(-1, args.vocab), tokens[:, 1:].reshape(-1))

    if mode == "inference":

        def run() -> None:
            with torch.no_grad():
                loss()

    elif mode == "mezo":
        mezo = steepest.MeZO(model.named_parameters(), lr=1e-6)

        def run() -> None:
            mezo.step(loss)

    elif mode == "adamw":
        adamw = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def run() -> None:
            adamw.zero_grad(set_to_none=False)
            loss().backward()
            adamw.step()

    else:
        raise ValueError(mode)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    _reset_high_water_mark()
    run()
    run()
    return {"peak": float(_status("VmHWM") - base), "params": float(params)}


def _measure(mode: str, args: argparse.Namespace) -> dict[str, float]:
    argv = [sys.executable, __file__, "--worker", mode]
    for name in ("vocab", "dim", "heads", "layers", "context", "batch"):
        argv += [f"--{name}", str(getattr(args, name))]
    # Fixed glibc thresholds: every large block is mmapped and unmapped when freed, so RSS follows
    # the live tensors; otherwise freed activations stay in the heap and fragmentation, not
    # tensors, sets the high-water mark (glibc raises its mmap threshold after each large free).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    """Measure each mode ``--repeats`` times in fresh processes and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", choices=("inference", "mezo", "adamw"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args)))
        return
    peaks: dict[str, list[float]] = {}
    params = 0.0
    for _ in range(args.repeats):
        for mode in ("inference", "mezo", "adamw"):
            result = _measure(mode, args)
            peaks.setdefault(mode, []).append(result["peak"])
            params = result["params"]
    mib = 2.0**20
    print(
        f"model: GPT vocab={args.vocab} dim={args.dim} layers={args.layers} context={args.context} "
        f"batch={args.batch}; parameters {params / mib:.1f} MiB (float32); {args.repeats} processes per mode"
    )
    print("peak = VmHWM - RSS after imports (so parameters, state, gradients and activations)")
    for mode, values in peaks.items():
        print(
            f"  {mode:9s} peak {statistics.median(values) / mib:8.1f} MiB "
            f"[{min(values) / mib:.1f}, {max(values) / mib:.1f}]"
        )
    inference = statistics.median(peaks["inference"])
    print(f"MeZO step / inference forward: {statistics.median(peaks['mezo']) / inference:.3f}x (target <= 1.1x)")
    print(f"AdamW step / inference forward: {statistics.median(peaks['adamw']) / inference:.3f}x")
    print(f"AdamW step / MeZO step: {statistics.median(peaks['adamw']) / statistics.median(peaks['mezo']):.3f}x")


if __name__ == "__main__":
    main()
