"""SLS, AdaSLS, PoNoS, SPS and multidimensional backtracking against float64 transcriptions.

No PyPI oracle exists for these (the official codes are git-only, see the spec sheet); the
oracles are the NumPy transcriptions in :mod:`tests.reference.step_size_algorithms`, compared
step by step (iterates and step sizes) on mini-batch logistic regression, where the searches
backtrack, and on a diagonal quadratic for the full-batch method.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import steepest
from tests.reference import step_size_algorithms as ref

STEPS = 40


def _run(opt_cls: type[torch.optim.Optimizer], problem: ref.Logistic, w0: np.ndarray, steps: int, **kw: Any) -> Any:
    x, y = torch.from_numpy(problem.x), torch.from_numpy(problem.y)
    w = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = opt_cls([w], **kw)
    iterates, etas, cuts = [], [], []
    for k in range(steps):
        b = problem.batch(k)

        def closure(b: slice = b) -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.softplus(-y[b] * (x[b] @ w)).mean()
            if torch.is_grad_enabled():
                loss.backward()
            return loss

        opt.step(closure)
        iterates.append(w.detach().numpy().copy())
        state = opt.state[w]
        etas.append(float(state["step_size"]) if "step_size" in state else float("nan"))
        cuts.append(int(state["last_backtracks"]))
    return iterates, etas, cuts


def _close(ours: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=f"step {k}")


@pytest.fixture
def problem() -> ref.Logistic:
    return ref.Logistic.make()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"reset_option": 0, "init_step_size": 50.0},
        {"reset_option": 2, "init_step_size": 20.0, "c": 0.5},
        {"reset_option": 1, "n_batches_per_epoch": 4, "init_step_size": 2.0},
        {"line_search": "goldstein", "init_step_size": 0.5, "reset_option": 2},
    ],
)
def test_sls_matches_transcription(problem: ref.Logistic, options: dict[str, Any]) -> None:
    w0 = np.zeros(problem.x.shape[1])
    expected, expected_eta = ref.sls(problem, w0, STEPS, **options)
    # The code does not cap Armijo's step (our lr); Goldstein's growth is capped at eta_max = 10 = lr.
    cap = 10.0 if options.get("line_search") == "goldstein" else 1e6
    ours, etas, cuts = _run(steepest.SLS, problem, w0, STEPS, lr=cap, **options)
    _close(ours, expected)
    np.testing.assert_allclose(etas, expected_eta, rtol=1e-12)
    if options.get("init_step_size", 1.0) >= 5.0:
        assert sum(cuts) > 0, "the comparison must exercise backtracking"
    if options.get("line_search") == "goldstein":
        assert max(etas) > options["init_step_size"], "the comparison must exercise Goldstein's growth"


@pytest.mark.parametrize("options", [{"init_step_size": 100.0}, {"init_step_size": 10.0, "momentum": 0.9, "c": 0.5}])
def test_sls_adam_matches_transcription(problem: ref.Logistic, options: dict[str, Any]) -> None:
    w0 = np.zeros(problem.x.shape[1])
    expected, expected_eta = ref.ada_sls(problem, w0, STEPS, **options)
    ours, etas, cuts = _run(steepest.SLSAdam, problem, w0, STEPS, lr=1e6, **options)
    _close(ours, expected)
    np.testing.assert_allclose(etas, expected_eta, rtol=1e-9)
    assert sum(cuts) > 0


@pytest.mark.parametrize(
    "options",
    [{}, {"xi": 0.0}, {"save_backtracks": False, "c": 0.1}, {"delta": 0.7, "c_p": 0.5, "max_eta": 3.0}],
)
def test_ponos_matches_transcription(problem: ref.Logistic, options: dict[str, Any]) -> None:
    w0 = np.zeros(problem.x.shape[1])
    expected, expected_eta, expected_cuts = ref.ponos(problem, w0, STEPS, **options)
    ours_options = {("lr" if k == "max_eta" else k): v for k, v in options.items()}
    ours, etas, cuts = _run(steepest.PoNoS, problem, w0, STEPS, **ours_options)
    _close(ours, expected)
    np.testing.assert_allclose(etas, expected_eta, rtol=1e-12)
    assert cuts == expected_cuts
    assert sum(cuts) > 0


@pytest.mark.parametrize(
    ("cls", "options", "reference"),
    [
        (steepest.SPS, {}, {}),
        (steepest.SPS, {"c": 0.2, "f_star": 0.1, "gamma_b": 2.0}, {"c": 0.2, "f_star": 0.1, "eta_max": 2.0}),
        (
            steepest.SPSMax,
            {"c": 0.2, "n_batches_per_epoch": 4},
            {"c": 0.2, "mode": "smooth_iter", "n_batches_per_epoch": 4},
        ),
    ],
)
def test_sps_matches_transcription(
    problem: ref.Logistic, cls: type[torch.optim.Optimizer], options: dict[str, Any], reference: dict[str, Any]
) -> None:
    w0 = np.zeros(problem.x.shape[1])
    expected, expected_eta = ref.sps(problem, w0, STEPS, **reference)
    ours, etas, _ = _run(cls, problem, w0, STEPS, **options)
    _close(ours, expected)
    np.testing.assert_allclose(etas, expected_eta, rtol=1e-12)


@pytest.mark.parametrize(
    ("set_type", "grad_dir", "scale"),
    [("ellipsoid", True, 1.0), ("ellipsoid", False, 1.0), ("box", True, 1.0), ("box", True, 1e10)],
)
def test_mdb_matches_transcription(set_type: str, grad_dir: bool, scale: float) -> None:
    rng = np.random.default_rng(4)
    d = 8
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    hessian = q @ np.diag(np.logspace(0, 2, d)) @ q.T + np.diag(np.logspace(0, 3, d))
    center = rng.standard_normal(d)

    def func(x: np.ndarray) -> float:
        return 0.5 * float((x - center) @ hessian @ (x - center))

    def grad(x: np.ndarray) -> np.ndarray:
        return hessian @ (x - center)

    expected, expected_cuts = ref.precsearch(
        func, grad, np.zeros(d), 150, set_type=set_type, scale=scale, grad_dir=grad_dir
    )
    # Once the loss is at rounding level the cutting planes (differences of nearly equal
    # losses) are noise: compare while f(x) > 1e-9 f(x0).
    keep = next((k for k, x in enumerate(expected) if func(x) <= 1e-9 * func(np.zeros(d))), len(expected))
    expected, expected_cuts = expected[:keep], expected_cuts[:keep]
    assert sum(expected_cuts) > 0 and len(expected) > 5
    h, c = torch.from_numpy(hessian), torch.from_numpy(center)
    x = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
    opt = steepest.MultidimensionalBacktracking([x], set=set_type, grad_dir=grad_dir, initial_scale=scale)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 0.5 * (x - c) @ h @ (x - c)
        if torch.is_grad_enabled():
            loss.backward()
        return loss

    ours, cuts = [], []
    for _ in range(len(expected)):
        opt.step(closure)
        cuts.append(int(opt.state[x]["last_backtracks"]))
        ours.append(x.detach().numpy().copy())
    # Cuts amplify rounding differences (u divides by a difference of nearly equal losses), so
    # iterates agree to 1e-7 relative in norm; the cut counts must agree exactly.
    for k, (a, b) in enumerate(zip(ours, expected, strict=True)):
        assert np.linalg.norm(a - b) <= 1e-7 * np.linalg.norm(b), f"step {k}"
    assert cuts == expected_cuts
