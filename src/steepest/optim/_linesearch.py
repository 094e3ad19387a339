"""Line searches shared by the step-size optimizers, with evaluation counters.

Every search works on a scalar function of the step size, ``phi(eta)``: the loss at the trial
point ``w0 + eta * d`` (and, for strong Wolfe, its derivative along ``d``). The optimizer builds
``phi`` from its closure (see :class:`TrialEvaluator`); the searches only decide which step
sizes to try and when to stop, and report how many evaluations and backtracks they used.

* :func:`armijo_search`: backtracking on ``phi(eta) <= ref - c * eta * decrease`` (Armijo 1966),
  monotone when ``ref = phi(0)``, nonmonotone when ``ref`` is a larger reference value from
  :func:`zhang_hager_reference` (Zhang & Hager 2004) or :func:`max_window_reference` (Grippo,
  Lampariello & Lucidi 1986).
* :func:`goldstein_search`: the Goldstein conditions, grown or shrunk as in the SLS code.
* :func:`strong_wolfe_search`: bracketing and zoom (Nocedal & Wright, Algorithms 3.5 and 3.6).

Same-batch, same-randomness evaluation: :class:`TrialEvaluator` captures the torch RNG state
before the first closure call and restores it before every trial, so a model with dropout
draws the same masks at every trial point as at the gradient point (otherwise the Armijo test
compares two different random functions). After the step the RNG state is put back to where
the first closure call left it, so the caller's random stream does not depend on how many
trials the search needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steepest.optim._closures import LossOnlyCaller, RNGState

#: A function of the step size returning the loss at the trial point.
Phi = Callable[[float], float]
#: A function of the step size returning the loss and its derivative along the search direction.
PhiWithSlope = Callable[[float], tuple[float, float]]


@dataclass(frozen=True)
class SearchResult:
    """What a line search found.

    Attributes:
        step_size: the accepted step size (or, when ``accepted`` is False, the last one the
            search arrived at; the optimizer decides the fallback).
        loss: ``phi(step_size)`` as evaluated (``nan`` when it was never evaluated).
        evaluations: calls of ``phi``.
        backtracks: how many times the step size was cut.
        accepted: whether the conditions held at ``step_size``.
    """

    step_size: float
    loss: float
    evaluations: int
    backtracks: int
    accepted: bool


def armijo_holds(value: float, reference: float, step_size: float, decrease: float, c: float) -> bool:
    """The (possibly nonmonotone) Armijo test ``value <= reference - c * step_size * decrease``.

    ``decrease`` is ``-phi'(0)`` (``||g||^2`` for the gradient direction); NaN never passes.
    """
    return value <= reference - c * step_size * decrease


def _decrease_model(decrease: float | Callable[[float], float]) -> Callable[[float], float]:
    if callable(decrease):
        return decrease
    slope = float(decrease)
    return lambda eta: eta * slope


def armijo_search(
    phi: Phi,
    reference: float,
    decrease: float | Callable[[float], float],
    initial_step: float,
    c: float,
    beta: float,
    max_evaluations: int = 100,
) -> SearchResult:
    """Backtracking Armijo search: try ``eta0, beta*eta0, beta^2*eta0, ...`` until the test holds.

    Args:
        phi: loss at the trial point for a step size.
        reference: ``phi(0)`` for the monotone search, a larger value for a nonmonotone one.
        decrease: ``-phi'(0) > 0``, or a function giving the model decrease at a step size
            (``sum_i min(eta, cap_i) * g_i.d_i`` when groups cap the step), used as
            ``phi(eta) <= reference - c * decrease(eta)``.
        initial_step: the first step size tried.
        c: sufficient-decrease constant.
        beta: backtracking factor in ``(0, 1)``.
        max_evaluations: trials allowed. When none is accepted the result has
            ``accepted=False`` and ``step_size = beta^max_evaluations * initial_step`` (one cut
            below the last one tried, as the SLS and PoNoS codes store it).
    """
    model = _decrease_model(decrease)
    step = initial_step
    for trial in range(max_evaluations):
        value = phi(step)
        if armijo_holds(value, reference, 1.0, model(step), c):
            return SearchResult(step, value, trial + 1, trial, True)
        step *= beta
    return SearchResult(step, math.nan, max_evaluations, max_evaluations, False)


def goldstein_search(
    phi: Phi,
    f0: float,
    decrease: float | Callable[[float], float],
    initial_step: float,
    c: float,
    beta_b: float,
    beta_f: float,
    max_step: float,
    max_evaluations: int = 100,
) -> SearchResult:
    """Goldstein search as the SLS code runs it: shrink on too little decrease, grow on too much.

    ``decrease`` is ``-phi'(0)`` or a model-decrease function of the step, as in
    :func:`armijo_search`. Accepts when ``f0 - (1-c)*eta*decrease <= phi(eta) <= f0 - c*eta*decrease``. When only the
    Armijo side holds the step grows, ``eta <- min(beta_f*eta, max_step)``; when only the
    curvature side holds it shrinks, ``eta <- max(beta_b*eta, 1e-8)``. Raises ``ValueError`` if
    neither holds (possible only for ``c > 0.5``). Without acceptance the result carries the
    last adjusted step (no fallback, as in the SLS code).
    """
    model = _decrease_model(decrease)
    step, backtracks = initial_step, 0
    for trial in range(max_evaluations):
        value = phi(step)
        armijo = armijo_holds(value, f0, 1.0, model(step), c)
        curvature = value >= f0 - (1.0 - c) * model(step)
        if armijo and curvature:
            return SearchResult(step, value, trial + 1, backtracks, True)
        if armijo:
            step = min(beta_f * step, max_step)
        elif curvature:
            step = max(beta_b * step, 1e-8)
            backtracks += 1
        else:
            raise ValueError(f"Goldstein search: neither condition holds at step {step} (c={c} > 0.5?)")
    return SearchResult(step, math.nan, max_evaluations, backtracks, False)


def zhang_hager_reference(q_prev: float, c_prev: float, loss: float, xi: float) -> tuple[float, float]:
    """One Zhang-Hager update: ``Q = xi*Q_prev + 1``, ``C = (xi*Q_prev*C_prev + loss) / Q``.

    With ``xi = 1``, ``C`` is the running mean of every loss seen; with ``xi = 0`` it is the
    current loss (the monotone search). The nonmonotone reference is ``max(C, loss)`` (PoNoS).
    """
    q = xi * q_prev + 1.0
    return q, (xi * q_prev * c_prev + loss) / q


def max_window_reference(history: Sequence[float], loss: float) -> float:
    """The Grippo-Lampariello-Lucidi reference: the maximum of the recent losses and ``loss``."""
    return max([loss, *[h for h in history if math.isfinite(h)]])


def strong_wolfe_search(
    phi: PhiWithSlope,
    f0: float,
    slope0: float,
    initial_step: float,
    c1: float,
    c2: float,
    max_evaluations: int = 25,
) -> SearchResult:
    """Strong-Wolfe search on ``phi(t) = (f, f')`` for ``t > 0``, ``slope0 = f'(0) < 0``.

    Nocedal & Wright's bracketing phase (doubling) and zoom phase (bisection), accepting
    ``f(t) <= f0 + c1*t*slope0`` and ``|f'(t)| <= c2*|slope0|``. Without a point satisfying both
    within the budget it returns the best point with sufficient decrease (``accepted=False``),
    or ``t = 0`` when there is none.
    """
    evaluations = backtracks = 0
    best_t, best_f = 0.0, f0

    def evaluate(t: float) -> tuple[float, float]:
        nonlocal evaluations, best_t, best_f
        evaluations += 1
        value, slope = phi(t)
        if value <= f0 + c1 * t * slope0 and value < best_f:
            best_t, best_f = t, value
        return value, slope

    def zoom(lo: float, f_lo: float, hi: float) -> SearchResult:
        nonlocal backtracks
        while evaluations < max_evaluations:
            backtracks += 1
            t = 0.5 * (lo + hi)
            value, slope = evaluate(t)
            if not value <= f0 + c1 * t * slope0 or value >= f_lo:
                hi = t
                continue
            if abs(slope) <= -c2 * slope0:
                return SearchResult(t, value, evaluations, backtracks, True)
            if slope * (hi - lo) >= 0:
                hi = lo
            lo, f_lo = t, value
        return SearchResult(best_t, best_f, evaluations, backtracks, False)

    t_prev, f_prev, t = 0.0, f0, initial_step
    while evaluations < max_evaluations:
        value, slope = evaluate(t)
        if not value <= f0 + c1 * t * slope0 or (evaluations > 1 and value >= f_prev):
            return zoom(t_prev, f_prev, t)
        if abs(slope) <= -c2 * slope0:
            return SearchResult(t, value, evaluations, backtracks, True)
        if slope >= 0:
            return zoom(t, value, t_prev)
        t_prev, f_prev, t = t, value, 2.0 * t
    return SearchResult(best_t, best_f, evaluations, backtracks, False)


# -- evaluating trial points ------------------------------------------------------------------


def as_float(value: Any) -> float:
    """A Python float from a loss (tensor or number)."""
    return float(value.detach()) if isinstance(value, Tensor) else float(value)


class TrialEvaluator:
    """Calls a closure at the gradient point and at trial points, with the same randomness.

    ``gradient_point()`` runs the closure under ``torch.enable_grad()`` (it back-propagates,
    per the closure contract) and counts a forward and a backward; ``loss_at_trial()`` wants the
    loss only and goes through a :class:`~steepest.optim._closures.LossOnlyCaller`: a documented
    closure runs under ``torch.no_grad()`` (a forward), a torch-style one (unconditional
    ``backward()``) under ``enable_grad`` (a forward and a backward, plus, once per step, the
    first attempt that stopped at its ``backward()``), and either way ``.grad`` of ``params``
    is left as the gradient point set it. ``loss_and_grad_at_trial()`` runs under
    ``enable_grad`` and leaves ``.grad`` at the trial point's gradient (both styles alike). With
    ``same_randomness`` the RNG state captured before the gradient point is restored before
    every trial, and ``finish()`` restores the state the gradient point left behind.

    ``forwards`` and ``backwards`` count what the closure really ran.
    """

    def __init__(
        self,
        closure: Callable[[], Any],
        same_randomness: bool,
        sign: float = 1.0,
        params: Sequence[Tensor] = (),
    ) -> None:
        self.closure = closure
        self.same_randomness = same_randomness
        self.sign = sign
        self._forwards = 0
        self._backwards = 0
        self._loss_only = LossOnlyCaller(closure, params)
        self._before: RNGState | None = None
        self._after: RNGState | None = None

    @property
    def forwards(self) -> int:
        """Closure calls so far (forward passes, including a torch-style closure's first attempt)."""
        return self._forwards + self._loss_only.forwards

    @property
    def backwards(self) -> int:
        """Closure calls so far that ran under ``enable_grad`` (and so back-propagated)."""
        return self._backwards + self._loss_only.backwards

    def gradient_point(self) -> Any:
        """The closure at the current point with gradients; returns its loss as given."""
        if self.same_randomness:
            self._before = RNGState.capture()
        with torch.enable_grad():
            loss = self.closure()
        if self.same_randomness:
            self._after = RNGState.capture()
        self._forwards += 1
        self._backwards += 1
        return loss

    def _rewind(self) -> None:
        if self._before is not None:
            self._before.restore()

    def loss_at_trial(self) -> float:
        """The signed loss at the parameters as they are now; ``.grad`` is left as it was."""
        self._rewind()
        value = as_float(self._loss_only())
        return self.sign * value

    def loss_and_grad_at_trial(self) -> float:
        """The signed loss at the parameters as they are now, with ``.grad`` filled by the closure."""
        self._rewind()
        with torch.enable_grad():
            value = as_float(self.closure())
        self._forwards += 1
        self._backwards += 1
        return self.sign * value

    def finish(self) -> None:
        """Leave the RNG where the gradient-point call left it."""
        if self._after is not None:
            self._after.restore()


#: Why each kind of closure optimizer cannot be driven by ``torch.amp.GradScaler``.
GRAD_SCALER_REASONS = {
    "line_search": "the line search compares losses with the squared gradient norm, which a scaled gradient breaks",
    "closure": "its closure recomputes the loss and gradients inside step(), after the scaler would unscale them",
    "hvp": "its Hessian-vector products differentiate the scaled gradients, which the scaler never unscales",
}


def refuse_grad_scaler(optimizer: Any, reason: str = "line_search") -> None:
    """Raise if ``optimizer.step`` is being called by an enabled ``torch.amp.GradScaler``.

    Closure and Hessian-vector-product optimizers declare ``_step_supports_amp_scaling``, so
    ``GradScaler.step`` hands them ``grad_scale`` / ``found_inf`` attributes instead of
    unscaling; we refuse there, naming the alternative. ``reason`` is a key of
    :data:`GRAD_SCALER_REASONS`. (``scaler.step(opt, closure)`` before any ``scaler.scale()``
    call fails earlier, inside torch, with "_scale is None"; no optimizer code runs then.)
    """
    if getattr(optimizer, "grad_scale", None) is not None or getattr(optimizer, "found_inf", None) is not None:
        raise RuntimeError(
            f"{type(optimizer).__name__} does not support torch.amp.GradScaler: {GRAD_SCALER_REASONS[reason]}. "
            "Use torch.autocast(device_type, dtype=torch.bfloat16), which needs no scaler, or float32, "
            "and call optimizer.step(closure) directly."
        )


# -- vector helpers (one code path per foreach flag) -----------------------------------------------


def set_trial_point(
    params: Sequence[Tensor],
    origin: Sequence[Tensor],
    direction: Sequence[Tensor],
    scales: Sequence[float],
    foreach: bool,
) -> None:
    """``p <- origin + scale * direction`` for each parameter (``scales`` per parameter)."""
    if foreach:
        moved = torch._foreach_add(list(origin), torch._foreach_mul(list(direction), list(scales)))
        for p, m in zip(params, moved, strict=True):
            p.copy_(m)
        return
    for p, o, d, s in zip(params, origin, direction, scales, strict=True):
        p.copy_(o + d * s)


def squared_norm(tensors: Sequence[Tensor], foreach: bool) -> float:
    """``sum ||t||^2`` in float64."""
    if not tensors:
        return 0.0
    if foreach:
        return float(sum(n.double() ** 2 for n in torch._foreach_norm(list(tensors))))
    return float(sum(t.double().pow(2).sum() for t in tensors))


def inner(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """``sum <a_i, b_i>`` in float64."""
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))
