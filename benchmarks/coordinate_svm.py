"""Greedy 1-norm coordinate descent on the SVM dual: iterations per rule and wall time against libsvm.

The claim (Ramesh et al., arXiv:2307.01169): greedy selection needs far fewer iterations than random
selection to reach the tolerance, and the gap grows with n. For each n the script fits the same RBF
SVM (make_classification data, standardised, C=1, gamma='scale', KKT tolerance 1e-3 as libsvm's
default) with the rules greedy / random / mvp / wss2 of ``steepest.coordinate.SVC`` and with
``sklearn.svm.SVC`` (libsvm, with shrinking), one thread, after waiting for an idle machine, in one
run (one wait for an idle machine per n, then the fits interleaved); wall times are medians
[min, max] over ``--repeats`` fits, and the ratio is ours / libsvm (medians).
Random selection is capped at ``--random-cap`` iterations; a capped run prints ``>cap`` and the
KKT violation it reached. A second table counts, from untimed runs that record the objective, the
iterations each rule needs to bring the dual objective within a relative ``--gaps`` of the optimum,
a criterion random selection can reach within the cap.

Run: ``python benchmarks/coordinate_svm.py [--sizes 500 2000 5000] [--repeats 3] [--random-cap 100000]``
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC as LibSVC

from steepest.coordinate import SVC, ConvergenceWarning

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _machine import Timing, busy_fraction, wait_for_idle


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(n_samples=n, n_features=20, n_informative=10, flip_y=0.05, random_state=0)
    return StandardScaler().fit_transform(X), y


def _timed(fits: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, Timing], dict[str, object]]:
    """Time every fit ``repeats`` times, interleaved, so a change in load hits all of them alike."""
    samples: dict[str, list[float]] = {k: [] for k in fits}
    models: dict[str, object] = {}
    for _ in range(repeats):
        for name, fit in fits.items():
            start = time.perf_counter()
            models[name] = fit()
            samples[name].append(time.perf_counter() - start)
    return {k: Timing.of(v) for k, v in samples.items()}, models


def _iters_to_gap(history: list[float], f_star: float, gaps: list[float]) -> list[int | None]:
    """First iteration (1-based) whose objective is within each relative gap of f*, None if never."""
    h = np.asarray(history)
    out: list[int | None] = []
    for eps in gaps:
        hit = np.nonzero(h - f_star <= eps * abs(f_star))[0]
        out.append(int(hit[0]) + 1 if hit.size else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 5000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--random-cap", type=int, default=100_000)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--idle-timeout", type=float, default=60.0)
    parser.add_argument("--gaps", type=float, nargs="+", default=[1e-2, 1e-4])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch threads: 1; machine busy before start: {busy_fraction(1.0):.0%}")
    header = (
        f"{'n':>5} | {'greedy it':>9} {'random it':>17} {'mvp it':>7} {'wss2 it':>7} | "
        f"{'random/greedy':>13} | {'libsvm ms':>22} {'greedy ms':>22} {'wss2 ms':>22} | "
        f"{'greedy/libsvm':>13} {'wss2/libsvm':>11} | {'|obj diff|':>9} | machine"
    )
    print(header)
    print("-" * len(header))
    gap_rows: list[tuple[int, dict[str, list[int | None]]]] = []
    for n in args.sizes:
        X, y = _data(n)
        busy = wait_for_idle(timeout=args.idle_timeout)
        fits: dict[str, Callable[[], object]] = {
            "libsvm": lambda X=X, y=y: LibSVC(C=1.0, kernel="rbf", tol=args.tol).fit(X, y),
            **{r: (lambda X=X, y=y, r=r: SVC(tol=args.tol, selection=r).fit(X, y)) for r in ("greedy", "mvp", "wss2")},
        }
        times, fitted = _timed(fits, args.repeats)
        t_lib, lib = times["libsvm"], fitted["libsvm"]
        models = {r: m for r, m in fitted.items() if isinstance(m, SVC)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            recorded = {
                r: SVC(tol=args.tol, selection=r, max_iter=args.random_cap).fit(X, y, record=True)
                for r in ("greedy", "random", "mvp", "wss2")
            }
        rnd = recorded["random"]
        greedy_it = models["greedy"].n_iter_
        if rnd.result_.converged:
            rnd_txt, ratio_txt = f"{rnd.n_iter_:>17}", f"{rnd.n_iter_ / greedy_it:>13.1f}"
        else:
            rnd_txt = f">{args.random_cap} (kkt {rnd.kkt_violation_:.1e})"
            ratio_txt = f">{args.random_cap / greedy_it:>12.1f}"
        z = np.zeros(n)
        assert isinstance(lib, LibSVC)
        z[lib.support_] = lib.dual_coef_[0]
        K = models["greedy"].cache_.rows(torch.arange(n)).numpy()
        lib_obj = 0.5 * z @ K @ z - np.abs(z).sum()
        diff = abs(models["greedy"].dual_objective_ - lib_obj) / abs(lib_obj)
        f_star = min(lib_obj, *(m.dual_objective_ for m in recorded.values()))
        gap_rows.append((n, {r: _iters_to_gap(m.result_.history, f_star, args.gaps) for r, m in recorded.items()}))
        print(
            f"{n:>5} | {greedy_it:>9} {rnd_txt:>17} {models['mvp'].n_iter_:>7} {models['wss2'].n_iter_:>7} | "
            f"{ratio_txt} | {t_lib.ms():>22} {times['greedy'].ms():>22} {times['wss2'].ms():>22} | "
            f"{times['greedy'].median / t_lib.median:>13.1f} {times['wss2'].median / t_lib.median:>11.1f} | "
            f"{diff:>9.1e} | busy {busy:.0%}",
            flush=True,
        )
    print("times in ms: median [min, max]; |obj diff| = relative dual-objective difference greedy vs libsvm")
    print()
    print("iterations to a relative dual-objective gap (f - f*)/|f*| <= eps")
    print(f"(f* = the best of libsvm and our runs; cap {args.random_cap} iterations):")
    print(f"{'n':>5} {'eps':>7} | {'greedy':>8} {'random':>8} {'mvp':>8} {'wss2':>8} | {'random/greedy':>13}")
    for n, per_rule in gap_rows:
        for k, eps in enumerate(args.gaps):
            its = {r: v[k] for r, v in per_rule.items()}
            cells = " ".join(f"{'>cap' if its[r] is None else its[r]:>8}" for r in ("greedy", "random", "mvp", "wss2"))
            ratio = "-" if its["random"] is None or not its["greedy"] else f"{its['random'] / its['greedy']:.1f}"
            print(f"{n:>5} {eps:>7.0e} | {cells} | {ratio:>13}")
    print(f"machine busy after: {busy_fraction(1.0):.0%}")


if __name__ == "__main__":
    main()
