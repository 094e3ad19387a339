"""How close a hand-written kernel gets to the bandwidth floor, next to the fused path, per update.

``benchmarks/step_time.py`` divides each step by the optimizer's bandwidth floor. On the 2-core
CPU machine the fused path misses 1.3x of it for the updates that need a norm or a per-block
statistic before they write. This script asks whether the machine or the compiled code is the
limit: it compiles plain C++ loops (OpenMP, ``-O3 -march=native``) for the same updates on the
same tensors and times them in the same alternated rounds as the fused step and a bandwidth
sample. Columns, each the median [min, max] over rounds of step time over that round's floor
(the floor of ``step_time.py``: the bytes the update must move over the in-place ``a.add_(b)``
bandwidth):

* ``C, per tensor``: each tensor's norms, then its update, before the next tensor. The second
  pass finds a tensor's arrays still in the last-level cache when they fit (32 MB here).
* ``C, norms first``: every tensor's norms, then every update: the order the compiled update
  runs in (its graph is functionalized, so every write to a parameter or state tensor is
  scheduled after all the reductions). For single-pass updates (AdamW, Adam-mini's row blocks,
  SCALE's row norms, whose reductions fit in the L1 cache) both columns run the same loops.
* ``fused``: the optimizer's ``fused=True`` step (``torch.optim.AdamW(fused=True)`` on the
  AdamW row: the calibration, where both are one pass).

The C loops are a measuring device, not a path of the library: float32 and contiguous tensors
only, hyperparameters fixed, scalar factors (bias corrections, trust ratios) computed on the
host per tensor as the fused path computes them once per launch, one ``ctypes`` call per tensor
and pass (about 1 us each). They read and write the same arrays as the update they stand for. Each row
waits for an idle machine first (see ``_machine.wait_for_idle``).

Run: ``python benchmarks/attainable_floor.py [--threads 2] [--repeats 15] [--only KEY ...]``
(needs a C++ compiler with OpenMP: ``CXX``, default ``g++``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import InplaceBandwidthProbe, Timing, timed, wait_for_idle
from steepest.optim.adam_mini import RULE_FULL
from step_time import build, state_traffic_bytes, transformer_shapes

KERNELS = r"""
#include <cmath>
#include <cstdint>
#include <omp.h>
extern "C" {
void set_threads(int n) { omp_set_num_threads(n); }

void adamw(float* p, const float* g, float* m, float* v, int64_t n, float lr, float b1, float b2,
           float eps, float wd, float c1, float c2) {
  #pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i];
    float mi = b1 * m[i] + (1 - b1) * gi, vi = b2 * v[i] + (1 - b2) * gi * gi;
    m[i] = mi; v[i] = vi;
    p[i] = p[i] * (1 - lr * wd) - lr * c1 * mi / (std::sqrt(vi) * c2 + eps);
  }
}

// LAMB pass 1: moments written, sums of squares of p and of u = c m / (sqrt(v) + eps) + wd p.
void lamb_reduce(const float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2,
                 float eps, float wd, float c, double* out) {
  double sp = 0, su = 0;
  #pragma omp parallel for simd reduction(+:sp, su) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i], pi = p[i];
    float mi = b1 * m[i] + (1 - b1) * gi, vi = b2 * v[i] + (1 - b2) * gi * gi;
    m[i] = mi; v[i] = vi;
    float u = c * mi / (std::sqrt(vi) + eps) + wd * pi;
    sp += (double)pi * pi; su += (double)u * u;
  }
  out[0] = sp; out[1] = su;
}
// LAMB pass 2: p -= s u, u rebuilt from the stored moments.
void lamb_apply(float* p, const float* m, const float* v, int64_t n, float s, float eps, float wd, float c) {
  #pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] -= s * (c * m[i] / (std::sqrt(v[i]) + eps) + wd * p[i]);
}

void sumsq2(const float* a, const float* b, int64_t n, double* out) {
  double sa = 0, sb = 0;
  #pragma omp parallel for simd reduction(+:sa, sb) schedule(static)
  for (int64_t i = 0; i < n; ++i) { sa += (double)a[i] * a[i]; sb += (double)b[i] * b[i]; }
  out[0] = sa; out[1] = sb;
}
double sumsq(const float* a, int64_t n) {
  double s = 0;
  #pragma omp parallel for simd reduction(+:s) schedule(static)
  for (int64_t i = 0; i < n; ++i) s += (double)a[i] * a[i];
  return s;
}
// LARS pass 2: heavy-ball momentum on the locally scaled gradient with weight decay.
void lars_apply(float* p, const float* g, float* m, int64_t n, float scale, float mom, float wd) {
  #pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float mi = mom * m[i] + scale * (g[i] + wd * p[i]);
    m[i] = mi; p[i] -= mi;
  }
}
// AdaGrad-Norm / NormalizedSD pass 2: p -= s g.
void scaled_sub(float* p, const float* g, int64_t n, float s) {
  #pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] -= s * g[i];
}

// Adam-mini on (blocks, len) rows: one second moment per block from the block's mean square.
void blocked_adam(float* p, const float* g, float* m, float* v, int64_t blocks, int64_t len, float lr,
                  float b1, float b2, float eps, float c1, float c2) {
  #pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const float* gb = g + b * len; float* pb = p + b * len; float* mb = m + b * len;
    double s = 0;
    #pragma omp simd reduction(+:s)
    for (int64_t i = 0; i < len; ++i) s += (double)gb[i] * gb[i];
    float vb = b2 * v[b] + (1 - b2) * (float)(s / len);
    v[b] = vb;
    float step = lr * c1 / (std::sqrt(vb) * c2 + eps);
    #pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      float mi = b1 * mb[i] + (1 - b1) * gb[i];
      mb[i] = mi; pb[i] -= step * mi;
    }
  }
}

// SCALE on (rows, cols): each row of the gradient divided by its RMS.
void row_normalized(float* p, const float* g, int64_t rows, int64_t cols, float lr, float wd) {
  #pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* gr = g + r * cols; float* pr = p + r * cols;
    double s = 0;
    #pragma omp simd reduction(+:s)
    for (int64_t i = 0; i < cols; ++i) s += (double)gr[i] * gr[i];
    float rms = std::fmax((float)std::sqrt(s / cols), 1e-8f), k = lr / rms, d = 1 - lr * wd;
    #pragma omp simd
    for (int64_t i = 0; i < cols; ++i) pr[i] = pr[i] * d - k * gr[i];
  }
}
}
"""

#: The optimizers compared: the norm-first and per-block updates, and AdamW as the calibration.
KEYS = ("adamw", "lamb", "lars", "adagrad_norm", "normalized_sd", "adam_mini", "scale")

F, I64, PTR = ctypes.c_float, ctypes.c_int64, ctypes.c_void_p
#: Argument types of the exported kernels.
SIGNATURES: dict[str, list[Any]] = {
    "set_threads": [ctypes.c_int],
    "adamw": [PTR, PTR, PTR, PTR, I64] + [F] * 7,
    "lamb_reduce": [PTR, PTR, PTR, PTR, I64] + [F] * 5 + [PTR],
    "lamb_apply": [PTR, PTR, PTR, I64] + [F] * 4,
    "sumsq2": [PTR, PTR, I64, PTR],
    "sumsq": [PTR, I64],
    "lars_apply": [PTR, PTR, PTR, I64] + [F] * 3,
    "scaled_sub": [PTR, PTR, I64, F],
    "blocked_adam": [PTR, PTR, PTR, PTR, I64, I64] + [F] * 6,
    "row_normalized": [PTR, PTR, I64, I64, F, F],
}


def compile_kernels(directory: str) -> ctypes.CDLL:
    """Build :data:`KERNELS` into a shared library under ``directory`` and load it."""
    source = Path(directory) / "kernels.cpp"
    library = Path(directory) / "kernels.so"
    source.write_text(KERNELS)
    compiler = os.environ.get("CXX", "g++")
    flags = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC"]
    subprocess.run([compiler, *flags, str(source), "-o", str(library)], check=True, capture_output=True)
    lib = ctypes.CDLL(str(library))
    for name, argtypes in SIGNATURES.items():
        getattr(lib, name).argtypes = argtypes
    lib.sumsq.restype = ctypes.c_double
    return lib


class Arrays:
    """Private float32 copies of parameters and gradients, and zeroed moments, for the C loops."""

    def __init__(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
        self.p = [p.detach().clone() for p in params]
        self.g = [g.clone() for g in grads]
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.n = [p.numel() for p in params]


def c_steps(key: str, lib: ctypes.CDLL, a: Arrays, opt: torch.optim.Optimizer) -> dict[str, Callable[[], None]]:
    """The C schedules of ``key`` over ``a`` (``{"per tensor": step}`` or both schedules)."""
    out = (ctypes.c_double * 2)()
    ptr = ctypes.addressof(out)
    ps, gs = [t.data_ptr() for t in a.p], [t.data_ptr() for t in a.g]
    ms, vs = [t.data_ptr() for t in a.m], [t.data_ptr() for t in a.v]
    idx = range(len(a.n))

    def adamw_all() -> None:
        for i in idx:
            lib.adamw(ps[i], gs[i], ms[i], vs[i], a.n[i], 1e-4, 0.9, 0.999, 1e-8, 0.01, 1.0, 1.0)

    def lamb_trust(i: int) -> float:
        lib.lamb_reduce(ps[i], gs[i], ms[i], vs[i], a.n[i], 0.9, 0.999, 1e-6, 0.01, 1.0, ptr)
        wn, un = out[0] ** 0.5, out[1] ** 0.5
        return 1e-3 * (min(wn, 10.0) / un if wn > 0 and un > 0 else 1.0)

    def lars_scale(i: int) -> float:
        lib.sumsq2(ps[i], gs[i], a.n[i], ptr)
        wn, gn = out[0] ** 0.5, out[1] ** 0.5
        return 0.1 * (1e-3 * wn / (gn + 1e-4 * wn) if wn > 0 and gn > 0 else 1.0)

    if key == "adamw":
        return {"per tensor": adamw_all}
    if key == "lamb":

        def lamb_each() -> None:
            for i in idx:
                lib.lamb_apply(ps[i], ms[i], vs[i], a.n[i], lamb_trust(i), 1e-6, 0.01, 1.0)

        def lamb_first() -> None:
            steps = [lamb_trust(i) for i in idx]
            for i in idx:
                lib.lamb_apply(ps[i], ms[i], vs[i], a.n[i], steps[i], 1e-6, 0.01, 1.0)

        return {"per tensor": lamb_each, "norms first": lamb_first}
    if key == "lars":

        def lars_each() -> None:
            for i in idx:
                lib.lars_apply(ps[i], gs[i], ms[i], a.n[i], lars_scale(i), 0.9, 1e-4)

        def lars_first() -> None:
            scales = [lars_scale(i) for i in idx]
            for i in idx:
                lib.lars_apply(ps[i], gs[i], ms[i], a.n[i], scales[i], 0.9, 1e-4)

        return {"per tensor": lars_each, "norms first": lars_first}
    if key in ("adagrad_norm", "normalized_sd"):  # one norm over the whole group, then p -= s g

        def global_norm(order: range | list[int]) -> None:
            total = sum(lib.sumsq(gs[i], a.n[i]) for i in idx)
            s = 1e-3 / (total**0.5 + 1e-10)
            for i in order:
                lib.scaled_sub(ps[i], gs[i], a.n[i], s)

        return {
            "norms first": lambda: global_norm(idx),
            "reversed": lambda: global_norm(list(reversed(idx))),
        }
    if key == "adam_mini":
        group = opt.param_groups[0]
        blocks = opt._blocks(group, group["params"])  # type: ignore[attr-defined]
        shapes = [(b.blocks, b.block_numel) if b.rule != RULE_FULL else None for b in blocks]

        def blocked() -> None:
            for i in idx:
                shape = shapes[i]
                if shape is None:
                    lib.adamw(ps[i], gs[i], ms[i], vs[i], a.n[i], 1e-4, 0.9, 0.999, 1e-8, 0.0, 1.0, 1.0)
                else:
                    rows, length = shape
                    lib.blocked_adam(ps[i], gs[i], ms[i], vs[i], rows, length, 1e-4, 0.9, 0.999, 1e-8, 1.0, 1.0)

        return {"per tensor": blocked}
    if key == "scale":
        dims = [(t.shape[0], t.numel() // t.shape[0]) if t.dim() >= 2 else None for t in a.p]

        def rows() -> None:
            for i in idx:
                dim = dims[i]
                if dim is None:  # vectors take AdamW in SCALE
                    lib.adamw(ps[i], gs[i], ms[i], vs[i], a.n[i], 1e-4, 0.9, 0.999, 1e-8, 0.0, 1.0, 1.0)
                else:
                    lib.row_normalized(ps[i], gs[i], dim[0], dim[1], 1e-2, 0.0)

        return {"per tensor": rows}
    raise ValueError(f"no C loops for {key!r}")


def main(argv: list[str] | None = None) -> int:
    """Print one row per optimizer: C schedules and the fused step over the bandwidth floor."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", nargs="*", default=list(KEYS), choices=KEYS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    named = transformer_shapes()
    names = [name for name, _ in named]
    params = [torch.nn.Parameter(torch.randn(shape) * 0.02) for _, shape in named]
    grads = [torch.randn(p.shape) * 1e-3 for p in params]
    with tempfile.TemporaryDirectory() as directory:
        lib = compile_kernels(directory)
        lib.set_threads(args.threads)
        n = sum(p.numel() for p in params)
        print(
            f"# {n / 1e6:.1f}M parameters in {len(params)} tensors, float32, CPU, {args.threads} threads, "
            f"torch {torch.__version__}; each cell: step time / floor, median [min, max] over {args.repeats} "
            "alternated rounds; each row waits for an idle machine first"
        )
        header = f"{'optimizer':<14} {'MB':>5} {'C, per tensor':>18} {'C, norms first':>18} {'fused':>18}  busy"
        print(header)
        print("-" * len(header))
        probe = InplaceBandwidthProbe()
        for key in args.only:
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt = build(key, "fused", names, params)  # torch's AdamW(fused=True) for "adamw"
            opt.step()
            opt.step()
            traffic = state_traffic_bytes(key, opt)
            arrays = Arrays(params, grads)
            cases = {**c_steps(key, lib, arrays, opt), "fused": opt.step}
            for fn in cases.values():
                fn()
            busy = wait_for_idle()
            ratios: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.repeats):
                for name, fn in cases.items():
                    bandwidth = probe.sample()
                    ratios[name].append(timed(fn) * bandwidth / traffic)
            cells = {k: Timing.of(v).ratio() for k, v in ratios.items()}
            extra = "".join(f"  {k}: {v}" for k, v in cells.items() if k not in ("per tensor", "norms first", "fused"))
            print(
                f"{key:<14} {traffic / 1e6:>5.0f} {cells.get('per tensor', '-'):>18} "
                f"{cells.get('norms first', '-'):>18} {cells['fused']:>18}  {busy:.2f}{extra}",
                flush=True,
            )
            del opt, arrays, cases
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
