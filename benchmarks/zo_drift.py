"""Rounding drift of MeZO's in-place +eps / -2eps / +eps round trip, per step, by dtype.

The closure returns a constant, so the projected gradient is 0 and the update is exactly zero:
whatever the parameters move is the round trip's rounding (MeZO issue #42). Parameters are
N(0, std^2) like a transformer's weights (std 0.02) or unit scale (std 1). For each dtype,
with and without ``master_weights``, prints per step: the RMS drift relative to the RMS of
the parameters, the fraction of entries changed, the largest change; and the RMS drift after
all steps. For scale, a MeZO update at lr=1e-6 with |g| = 1 has RMS 1e-6 (absolute).

Run: ``python benchmarks/zo_drift.py [--numel 1000000] [--steps 20]``.
"""

from __future__ import annotations

import argparse

import torch

import steepest


def drift(dtype: torch.dtype, std: float, numel: int, steps: int, eps: float, master: bool) -> dict[str, float]:
    """Per-step and accumulated drift statistics for one configuration."""
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter((torch.randn(numel, generator=gen, dtype=torch.float64) * std).to(dtype))
    start = w.detach().double().clone()
    opt = steepest.MeZO([w], lr=1e-6, eps=eps, master_weights=master)
    rms_param = float(start.pow(2).mean().sqrt())
    per_step, changed, largest = [], [], 0.0
    previous = start
    for _ in range(steps):
        opt.step(lambda: torch.tensor(0.0))
        now = w.detach().double()
        delta = now - previous
        per_step.append(float(delta.pow(2).mean().sqrt()))
        changed.append(float((delta != 0).double().mean()))
        largest = max(largest, float(delta.abs().max()))
        previous = now.clone()
    total = float((previous - start).pow(2).mean().sqrt())
    return {
        "rms_step": sum(per_step) / steps,
        "rel_step": sum(per_step) / steps / rms_param,
        "changed": sum(changed) / steps,
        "max": largest,
        "rms_total": total,
    }


def main() -> None:
    """Print the drift table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numel", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eps", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"MeZO round-trip drift: {args.numel} entries, {args.steps} steps, eps={args.eps}, update = 0")
    header = f"{'dtype':9s} {'std':>5s} {'master':>6s} {'RMS/step':>10s} {'rel/step':>10s} "
    print(header + f"{'changed':>8s} {'max|d|':>10s} {'RMS total':>10s}")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for std in (0.02, 1.0):
            for master in (False, True):
                if master and dtype == torch.float32:
                    continue  # master_weights only applies to 16-bit parameters
                r = drift(dtype, std, args.numel, args.steps, args.eps, master)
                print(
                    f"{str(dtype).removeprefix('torch.'):9s} {std:5.2f} {master!s:>6s} {r['rms_step']:10.2e} "
                    f"{r['rel_step']:10.2e} {r['changed']:8.1%} {r['max']:10.2e} {r['rms_total']:10.2e}"
                )
    print("For scale: one MeZO update at lr=1e-6 and |g|=1 has RMS 1.00e-06.")


if __name__ == "__main__":
    main()
