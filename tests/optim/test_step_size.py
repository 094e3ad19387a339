"""Behaviour of the line searches and step-size optimizers beyond the conformance matrix.

Armijo from a step <= 1/L never backtracks on a quadratic; SPS with exact f* converges
linearly at the theorem's rate on interpolating least squares; the Goldstein, strong-Wolfe and
nonmonotone components satisfy their conditions; trial points see the same dropout masks;
GradScaler is refused; the evaluation counters add up.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

import steepest
from steepest.optim._linesearch import (
    TrialEvaluator,
    armijo_search,
    goldstein_search,
    max_window_reference,
    strong_wolfe_search,
    zhang_hager_reference,
)


def _quadratic(dim: int = 12, kappa: float = 50.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    eig = torch.logspace(0.0, math.log10(kappa), dim, dtype=torch.float64)
    return (
        q @ torch.diag(eig) @ q.T,
        torch.randn(dim, generator=gen, dtype=torch.float64),
        float(eig.min()),
        float(eig.max()),
    )


def _closure(opt: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        if torch.is_grad_enabled():
            loss.backward()
        return loss.detach()

    return closure


# -- Armijo on a quadratic -------------------------------------------------------------------


@pytest.mark.parametrize("reset_option", [0, 2])
@pytest.mark.parametrize("c", [0.1, 0.5])
def test_armijo_from_one_over_l_never_backtracks(reset_option: int, c: float) -> None:
    """f(x - g/L) <= f - ||g||^2/(2L), so the test with c <= 1/2 holds at the first trial."""
    hessian, center, _, big_l = _quadratic()
    x = torch.nn.Parameter(torch.zeros_like(center))
    opt = steepest.SLS([x], init_step_size=1.0 / big_l, reset_option=reset_option, c=c)
    closure = _closure(opt, lambda: 0.5 * (x - center) @ hessian @ (x - center))
    initial = float(closure())
    for _ in range(300):
        opt.step(closure)
    state = opt.state[x]
    assert float(state["n_backtracks"]) == 0
    assert float(state["step_size"]) == pytest.approx(1.0 / big_l)
    assert float(closure()) < 1e-3 * initial  # it also made progress


def test_armijo_above_two_over_l_backtracks() -> None:
    """The counter can fail the test above: from 4/L the search must cut.

    A step above 2(1-c)/L fails the test on the top eigenvector's component.
    """
    hessian, center, _, big_l = _quadratic()
    x = torch.nn.Parameter(torch.zeros_like(center))
    opt = steepest.SLS([x], init_step_size=4.0 / big_l, reset_option=2)
    closure = _closure(opt, lambda: 0.5 * (x - center) @ hessian @ (x - center))
    for _ in range(30):
        opt.step(closure)
    assert float(opt.state[x]["n_backtracks"]) > 0


def test_armijo_search_component_on_a_parabola() -> None:
    """phi(t) = (t - 1)^2: decrease 2 at t=0; from 8 with beta 0.5, c 0.5 the first accepted is 1."""
    calls: list[float] = []

    def phi(t: float) -> float:
        calls.append(t)
        return (t - 1.0) ** 2

    result = armijo_search(phi, 1.0, 2.0, 8.0, 0.5, 0.5)
    assert result.accepted and result.step_size == 1.0
    assert calls == [8.0, 4.0, 2.0, 1.0] and result.evaluations == 4 and result.backtracks == 3
    failed = armijo_search(lambda t: math.nan, 1.0, 2.0, 1.0, 0.5, 0.5, max_evaluations=5)
    assert not failed.accepted and failed.step_size == 0.5**5 and failed.evaluations == 5


def test_nonmonotone_references() -> None:
    """Zhang-Hager with xi=1 is the running mean, xi=0 the current loss; the window takes the max."""
    losses = [3.0, 1.0, 2.0, 0.5]
    q = c = 0.0
    for k, f in enumerate(losses):
        q, c = zhang_hager_reference(q, c, f, 1.0)
        assert c == pytest.approx(float(np.mean(losses[: k + 1])))
    assert zhang_hager_reference(5.0, 7.0, 0.25, 0.0) == (1.0, 0.25)
    assert max_window_reference([3.0, 1.0, math.nan], 2.0) == 3.0
    # A nonmonotone reference accepts a step the monotone test rejects.
    phi = lambda t: 1.0 + 0.1 * t  # noqa: E731 - uphill: monotone Armijo can never accept
    assert not armijo_search(phi, 1.0, 1.0, 1.0, 0.1, 0.5, max_evaluations=10).accepted
    assert armijo_search(phi, 2.0, 1.0, 1.0, 0.1, 0.5).accepted


def test_goldstein_conditions_hold_and_the_step_grows() -> None:
    slope = 2.0  # phi(t) = (t - 1)^2, phi(0) = 1, phi'(0) = -2

    result = goldstein_search(lambda t: (t - 1.0) ** 2, 1.0, slope, 0.01, 0.25, 0.9, 2.0, 10.0)
    assert result.accepted and result.step_size > 0.01  # grew from a too-small step
    value = (result.step_size - 1.0) ** 2
    assert 1.0 - 0.75 * result.step_size * slope <= value <= 1.0 - 0.25 * result.step_size * slope


def test_strong_wolfe_conditions_hold() -> None:
    def phi(t: float) -> tuple[float, float]:
        return (t - 3.0) ** 2 + math.sin(3 * t), 2 * (t - 3.0) + 3 * math.cos(3 * t)

    f0, d0 = phi(0.0)
    for t1 in (0.1, 1.0, 20.0):
        result = strong_wolfe_search(phi, f0, d0, t1, 1e-4, 0.5)
        f, d = phi(result.step_size)
        assert result.accepted
        assert f <= f0 + 1e-4 * result.step_size * d0
        assert abs(d) <= 0.5 * abs(d0)


# -- SPS: linear convergence with exact f* ---------------------------------------------------


def _least_squares(n: int = 40, dim: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    x_star = torch.randn(dim, generator=gen, dtype=torch.float64)
    return a, a @ x_star, x_star  # consistent: every f_i has minimum 0 at x_star (interpolation)


def _fit_rate(distances: list[float]) -> tuple[float, float]:
    """Per-step contraction factor of ||x_k - x*||^2 by a log-linear fit, and the fit's R^2."""
    k = np.arange(len(distances))
    y = np.log(distances)
    slope, intercept = np.polyfit(k, y, 1)
    residual = y - (slope * k + intercept)
    return float(np.exp(slope)), 1.0 - float(residual.var() / y.var())


@pytest.mark.parametrize("batch", ["full", "single"])
def test_sps_with_exact_f_star_converges_linearly(batch: str) -> None:
    """SPS with exact f* = 0 converges linearly, at least at the theorem's rate.

    Loizou et al. 2021, Theorem 3.1: under interpolation and strong convexity, SPS with c = 1/2
    contracts E||x - x*||^2 at least by (1 - mu / L_max) per step. Fitted on the run and
    compared with that bound (full batch: L_max = L; single samples: L_max = max ||a_i||^2).
    """
    a, b, x_star = _least_squares()
    n = a.shape[0]
    x = torch.nn.Parameter(torch.zeros_like(x_star))
    opt = steepest.SPS([x], c=0.5, f_star=0.0, eps=0.0)
    gen = torch.Generator().manual_seed(0)
    hessian = a.T @ a / n
    mu = float(torch.linalg.eigvalsh(hessian)[0])
    if batch == "full":
        l_max, steps = float(torch.linalg.eigvalsh(hessian)[-1]), 60
    else:
        l_max, steps = float((a**2).sum(1).max()), 600
    distances = []
    for _ in range(steps):
        rows = torch.arange(n) if batch == "full" else torch.randint(n, (1,), generator=gen)
        closure = _closure(opt, lambda rows=rows: 0.5 * ((a[rows] @ x - b[rows]) ** 2).mean())
        opt.step(closure)
        distances.append(float(((x.detach() - x_star) ** 2).sum()))
    # Fit until rounding: below ~1e-13 of the start, ||g|| < 1e-8 and the step is 0.
    floor = 1e-13 * float((x_star**2).sum())
    fitted = [v for v in distances if v > floor]
    assert len(fitted) >= 20
    rate, r2 = _fit_rate(fitted)
    bound = 1.0 - mu / l_max
    # Linear: a straight line in log scale (single samples add noise around it).
    assert rate < 1.0 and r2 > (0.95 if batch == "full" else 0.8), (rate, r2)
    assert rate <= bound, (rate, bound)
    assert distances[-1] < 1e-6 * float((x_star**2).sum())


def test_sps_with_wrong_f_star_stalls() -> None:
    """The test above can fail: with f* above the true minimum SPS stops short of x*."""
    a, b, x_star = _least_squares()
    x = torch.nn.Parameter(torch.zeros_like(x_star))
    opt = steepest.SPS([x], f_star=0.1)
    closure = _closure(opt, lambda: 0.5 * ((a @ x - b) ** 2).mean())
    initial = float(closure())
    assert initial > 0.1
    for _ in range(60):
        opt.step(closure)
    # Once a step lands below f* the Polyak step is 0 for good: no convergence to f = 0.
    assert float(opt.state[x]["step_size"]) == 0.0
    assert float(closure()) > 1e-4 * initial  # exact f* reaches ~1e-17 * initial here


def test_sps_accepts_loss_after_backward_and_per_batch_f_star() -> None:
    a, b, _ = _least_squares()
    x1 = torch.nn.Parameter(torch.zeros(a.shape[1], dtype=torch.float64))
    x2 = torch.nn.Parameter(torch.zeros(a.shape[1], dtype=torch.float64))
    opt1, opt2 = steepest.SPS([x1]), steepest.SPS([x2], f_star=123.0)
    for _ in range(5):
        opt1.step(_closure(opt1, lambda: 0.5 * ((a @ x1 - b) ** 2).mean()))
        opt2.zero_grad()
        loss = 0.5 * ((a @ x2 - b) ** 2).mean()
        loss.backward()
        opt2.step(loss=loss, f_star=0.0)  # the per-step f* overrides the group's
    torch.testing.assert_close(x1.detach(), x2.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("key", ["sps", "sps_max"])
def test_sps_maximize_with_a_bound_ascends_to_the_maximum(key: str) -> None:
    """maximize=True is SPS on -f: f_star bounds -f, so -f_star is the maximum (here 3)."""
    a, b, _ = _least_squares()
    x_max = torch.nn.Parameter(torch.zeros(a.shape[1], dtype=torch.float64))
    x_min = torch.nn.Parameter(torch.zeros(a.shape[1], dtype=torch.float64))
    opt_max = steepest.create_optimizer(key, [x_max], f_star=-3.0, maximize=True)
    opt_min = steepest.create_optimizer(key, [x_min], f_star=-3.0)
    objective = _closure(opt_max, lambda: 3.0 - 0.5 * ((a @ x_max - b) ** 2).mean())
    negated = _closure(opt_min, lambda: 0.5 * ((a @ x_min - b) ** 2).mean() - 3.0)
    start = float(objective())
    for _ in range(100):
        opt_max.step(objective)
        opt_min.step(negated)
    torch.testing.assert_close(x_max.detach(), x_min.detach(), rtol=0, atol=0)
    assert start < 2.0 and float(objective()) > 3.0 - 1e-6


@pytest.mark.parametrize("key", ["sps", "sps_max"])
def test_sps_maximize_above_the_stated_maximum_is_refused(key: str) -> None:
    """A positive objective under the default f_star = 0 (maximum 0) would never move: it raises."""
    a, b, _ = _least_squares()
    x = torch.nn.Parameter(torch.ones(a.shape[1], dtype=torch.float64))
    opt = steepest.create_optimizer(key, [x], maximize=True)
    closure = _closure(opt, lambda: 1.0 + 0.5 * ((a @ x - b) ** 2).mean())
    with pytest.raises(ValueError, match="f_star"):
        opt.step(closure)
    closure()
    with pytest.raises(ValueError, match="f_star"):
        opt.step(loss=1.0 + 0.5 * ((a @ x - b) ** 2).mean().detach())
    assert torch.equal(x.detach(), torch.ones_like(x))
    assert not opt.state[x]  # a refused step creates no state either
    # With a bound that holds where it starts (-f_star = 1000 above the objective) it moves.
    opt = steepest.create_optimizer(key, [x], maximize=True, f_star=-1e3)
    opt.step(_closure(opt, lambda: 1.0 + 0.5 * ((a @ x - b) ** 2).mean()))
    assert not torch.equal(x.detach(), torch.ones_like(x))


# -- same batch, same randomness -----------------------------------------------------------------


def _dropout_model() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(32, 1))
    return model, torch.randn(64, 5), torch.randn(64, 1)


def test_trials_see_the_same_dropout_masks() -> None:
    model, x, y = _dropout_model()

    def closure() -> torch.Tensor:
        model.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        if torch.is_grad_enabled():
            loss.backward()
        return loss

    same = TrialEvaluator(closure, same_randomness=True)
    f0 = float(same.gradient_point().detach())
    assert same.loss_at_trial() == f0 and same.loss_at_trial() == f0  # unchanged params, same masks
    same.finish()
    after = torch.rand(3)
    other = TrialEvaluator(closure, same_randomness=False)
    g0 = float(other.gradient_point().detach())
    assert other.loss_at_trial() != g0  # fresh masks: a different function
    # finish() leaves the RNG where one closure call leaves it, whatever the number of trials.
    torch.manual_seed(5)
    closure()
    expected = torch.rand(3)
    torch.manual_seed(5)
    evaluator = TrialEvaluator(closure, same_randomness=True)
    evaluator.gradient_point()
    for _ in range(4):
        evaluator.loss_at_trial()
    evaluator.finish()
    assert torch.equal(torch.rand(3), expected)
    assert not torch.equal(after, expected)


@pytest.mark.parametrize("key", ["sls", "ponos", "sls_adam"])
def test_accepted_step_satisfies_armijo_under_dropout(key: str) -> None:
    """With same_randomness the accepted point passes the Armijo test for the same masks."""
    model, x, y = _dropout_model()
    params = list(model.parameters())
    opt = steepest.create_optimizer(key, params, **({"init_step_size": 10.0} if key != "ponos" else {}))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        if torch.is_grad_enabled():
            loss.backward()
        return loss.detach()

    state = opt.state
    for _ in range(5):
        rng = torch.get_rng_state()
        before = [p.detach().clone() for p in params]
        closure()  # the gradient the step will see (same masks: the RNG is rewound below)
        grads = [p.grad.detach().clone() for p in params]  # type: ignore[union-attr]
        torch.set_rng_state(rng)
        f0 = float(opt.step(closure))
        moved = [p.detach() - b for p, b in zip(params, before, strict=True)]
        after_rng = torch.get_rng_state()
        torch.set_rng_state(rng)
        with torch.no_grad():
            f_new = float(closure())
        torch.set_rng_state(after_rng)
        # Armijo along the taken step: f_new <= ref - c * <g, -step>, with ref >= f0.
        decrease = -sum(float((g * m).sum()) for g, m in zip(grads, moved, strict=True))
        c = opt.param_groups[0]["c"]
        reference = f0 if key != "ponos" else max(f0, float(state[params[0]]["c_ref"]))
        assert decrease > 0
        assert f_new <= reference - c * decrease + 1e-12


def test_sls_adam_trains_a_tiny_loss_where_sls_sgd_stops() -> None:
    """AdaSLS has no ||g|| < 1e-8 check (commented out in its code): a loss scaled by 1e-9 trains.

    The SGD-direction SLS keeps the SLS code's check and does not move on the same problem.
    """
    _, center, _, _ = _quadratic()
    for key in ("sls_adam", "sls"):
        x = torch.nn.Parameter(torch.zeros_like(center))
        opt = steepest.create_optimizer(key, [x])
        closure = _closure(opt, lambda x=x: 1e-9 * 0.5 * ((x - center) ** 2).sum())
        with torch.enable_grad():
            closure()
        assert x.grad is not None and float(x.grad.norm()) < 1e-8
        initial = float(closure())
        for _ in range(50):
            opt.step(closure)
        if key == "sls":
            assert torch.equal(x.detach(), torch.zeros_like(x))
        else:
            assert float(closure()) < 0.1 * initial


# -- GradScaler and misuse ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sls", "ponos", "sps", "mdb"])
def test_grad_scaler_is_refused(key: str) -> None:
    w = torch.nn.Parameter(torch.randn(4))
    opt = steepest.create_optimizer(key, [w])
    scaler = torch.amp.GradScaler("cpu")
    assert scaler.is_enabled()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (w**2).sum()
        if torch.is_grad_enabled():
            scaler.scale(loss).backward()
        return loss

    closure()
    before = w.detach().clone()
    with pytest.raises(RuntimeError, match="GradScaler"):
        scaler.step(opt, closure)
    assert torch.equal(w.detach(), before)


def test_counters_add_up() -> None:
    hessian, center, _, big_l = _quadratic()
    x = torch.nn.Parameter(torch.zeros_like(center))
    opt = steepest.SLS([x], init_step_size=20.0 / big_l, reset_option=2)
    closure = _closure(opt, lambda: 0.5 * (x - center) @ hessian @ (x - center))
    steps = 10
    for _ in range(steps):
        opt.step(closure)
    state = opt.state[x]
    trials = float(state["n_forwards"]) - float(state["n_backwards"])
    assert float(state["n_backwards"]) == steps  # one gradient per step
    assert trials == float(state["n_backtracks"]) + steps  # every search accepted after its cuts
    assert float(state["step"]) == steps


def test_mdb_beats_the_best_scalar_step_on_a_badly_scaled_problem() -> None:
    """Per-coordinate steps beat any scalar step on a badly scaled diagonal quadratic.

    With curvatures 1..1e3, MDB (box) reaches 1e-8 of the initial loss within far fewer
    gradient evaluations than gradient descent with the best constant step 1/L needs (about
    kappa*log(1e8) ~ 18000).
    """
    d = 20
    curv = torch.logspace(0, 3, d, dtype=torch.float64)
    center = torch.linspace(-1, 1, d, dtype=torch.float64)
    x = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
    opt = steepest.MultidimensionalBacktracking([x], set="box")
    closure = _closure(opt, lambda: 0.5 * (curv * (x - center) ** 2).sum())
    initial = float(closure())
    while float(closure()) > 1e-8 * initial and float(opt.state[x]["n_backwards"] if opt.state[x] else 0) < 2000:
        opt.step(closure)
    assert float(closure()) <= 1e-8 * initial
    gd_evaluations = math.ceil(math.log(1e8) / -math.log(1 - 1 / 1e3))
    assert float(opt.state[x]["n_backwards"]) < gd_evaluations / 10
