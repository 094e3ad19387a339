"""Memory of a hypergradient as a function of the inner steps: ITD (full, truncated) against AID.

Exact bytes: the peak of tensor storage alive at once while the hypergradient is computed, tracked by
``steepest.bilevel._memory.LiveTensorBytes`` (a TorchDispatchMode, works inside ``torch.func``; the
numbers do not depend on machine load, so no idle wait). Problem: per-feature ridge, 256 features,
200 training rows; AID runs the inner steps without a graph, then 20 CG iterations.

Run: ``python benchmarks/bilevel_memory.py [--out-dir DIR]`` (prints a table with ratios to AID at
the same steps; with ``--out-dir`` also writes ``bilevel_memory.png``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from steepest.bilevel import aid_hypergrad, inner_gradient_descent, itd_hypergrad
from steepest.bilevel._memory import peak_bytes

DT = torch.float64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--features", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    d = args.features
    gen = torch.Generator().manual_seed(0)
    X, Xv = torch.randn(200, d, generator=gen, dtype=DT), torch.randn(50, d, generator=gen, dtype=DT)
    y, yv = torch.randn(200, generator=gen, dtype=DT), torch.randn(50, generator=gen, dtype=DT)

    def g(w: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((X @ w - y) ** 2).sum() + 0.5 * (lam * w**2).sum()

    def f(w: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((Xv @ w - yv) ** 2).sum()

    lam, w0, lr = torch.full((d,), 10.0, dtype=DT), torch.zeros(d, dtype=DT), 1e-4
    steps = [10, 20, 40, 80, 160]
    rows = []
    for t in steps:
        itd = peak_bytes(lambda: itd_hypergrad(f, g, w0, lam, lr=lr, steps=t))  # noqa: B023 (run at once)
        trunc = peak_bytes(lambda: itd_hypergrad(f, g, w0, lam, lr=lr, steps=t, truncate=10))  # noqa: B023

        def aid(t: int = t) -> None:
            w = inner_gradient_descent(g, w0, lam, lr=lr, steps=t).y
            aid_hypergrad(f, g, w, lam, tol=0.0, max_iter=20)

        rows.append((t, itd, trunc, peak_bytes(aid)))
    print(f"{'inner steps':>11s} {'ITD bytes':>11s} {'ITD K=10':>10s} {'AID-CG':>10s} {'ITD/AID':>8s}")
    for t, itd, trunc, aid_b in rows:
        print(f"{t:11d} {itd:11d} {trunc:10d} {aid_b:10d} {itd / aid_b:8.2f}")
    slope = (rows[-1][1] - rows[0][1]) / (steps[-1] - steps[0])
    print(f"ITD grows by {slope:.0f} bytes per unrolled step ({slope / (8 * d):.2f} iterate-sized tensors); "
          f"AID spread over steps: {max(r[3] for r in rows) - min(r[3] for r in rows)} bytes")  # fmt: skip
    if args.out_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.out_dir.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(6, 4))
        for idx, label in ((1, "ITD (full unroll)"), (2, "ITD (truncated, K=10)"), (3, "AID-CG (20 HVPs)")):
            ax.plot(steps, [r[idx] / 1024 for r in rows], "o-", label=label)
        ax.set(xlabel="inner steps T", ylabel="peak live tensor KiB", title=f"hypergradient memory (d={d}, float64)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out_dir / "bilevel_memory.png", dpi=120)
        print(f"figure written to {args.out_dir}")


if __name__ == "__main__":
    main()
