"""PoNoS: Polyak initial step, nonmonotone stochastic line search, backtrack resetting (Galli et al. 2023)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from steepest.optim._base import ParamGroup
from steepest.optim._linesearch import (
    TrialEvaluator,
    armijo_search,
    as_float,
    inner,
    set_trial_point,
    zhang_hager_reference,
)
from steepest.optim._step_size_base import Entry, StepSizeOptimizer
from steepest.optim._validation import POSITIVE, Boolean, Integer, Interval, Rule

#: Step the PoNoS code falls back to when no trial passes.
FALLBACK_STEP = 1e-6


class PoNoS(StepSizeOptimizer):
    r"""SGD with a Polyak initial step and a nonmonotone (Zhang-Hager) Armijo line search.

    Paper: Galli, Rauhut, Schmidt, "Don't be so Monotone: Relaxing Stochastic Line Search in
    Over-Parameterized Models", NeurIPS 2023, arXiv:2306.12747. Official code:
    leonardogalli91/PoNoS@bff32d0 (read, not copied).

    Each step, on the mini-batch loss :math:`f_k` with gradient :math:`g_k`:

    1. Polyak initial step: :math:`\eta_0 = (f_k - f^*)/(c_p\|g_k\|^2 + 10^{-8})`, then with the
       resetting technique (``save_backtracks``) :math:`\eta_0 \leftarrow \delta^{l_k}\eta_0`,
       clipped to :math:`[\eta_{min}, lr]`.
    2. Zhang-Hager reference: :math:`Q_k = \xi Q_{k-1} + 1`,
       :math:`C_k = (\xi Q_{k-1} C_{k-1} + f_k)/Q_k`, :math:`R_k = \max(C_k, f_k)`.
    3. Backtracking: :math:`\eta = \eta_0, \delta\eta_0, \dots` until
       :math:`f_k(w_k - \eta g_k) \le R_k - c\,\eta\|g_k\|^2`; with ``max_backtracks`` failures the
       step is :math:`10^{-6}`.
    4. Backtrack memory: :math:`l_{k+1} = \max(l_k + e_k - 1, 0)` with :math:`e_k` the number of
       cuts before acceptance (``max_backtracks - 1`` on failure): a search that accepts its
       first trial lowers :math:`l` by one.
    5. No step (and :math:`l` unchanged) when :math:`\|g_k\| < 10^{-8}` or :math:`f_k = 0`.

    The paper's claim, checked in :mod:`steepest.repro.ponos_backtracks`: after the first
    iterations most steps need zero backtracks.

    What ``lr`` means: the **largest step size** (the code's ``max_eta``, default 10). With
    several param groups one search runs over all of them and a group's step is
    :math:`\min(\eta, lr_{group})` (the Armijo model decrease uses these capped steps);
    ``lr = 0`` freezes a group, and when every group has ``lr = 0`` no trial is evaluated.
    Every other setting is optimizer-wide: a group giving one a different value raises
    ``ValueError`` (it would be ignored).

    State (optimizer-wide float64 scalars, copied in every parameter's state): ``step``,
    ``step_size`` (last :math:`\eta`), ``q``, ``c_ref`` (:math:`Q_k`, :math:`C_k`),
    ``backtrack_memory`` (:math:`l_k`), ``n_forwards``, ``n_backwards``, ``n_backtracks``,
    ``last_backtracks``. No per-coordinate state.

    Defaults (PoNoS code): ``c=0.5``, ``c_p=0.1``, ``delta=0.5``, ``xi=1`` (``zhang_xi``),
    ``lr=10`` (``max_eta``), ``min_eta=1e-6``, ``f_star=0``, ``save_backtracks=True``, 100 trials.

    Closure contract: see :class:`~steepest.optim._step_size_base.StepSizeOptimizer` (trials
    under ``torch.no_grad()``, same batch, same RNG state with ``same_randomness``; a
    torch-style closure takes the same steps at a backward pass per trial).

    Differences from the code: ``f_star`` is used in the Polyak step (the code takes
    :math:`f^* = 0` and ignores its ``f_star`` argument; the default 0 is identical); with
    :math:`\|g\| < 10^{-8}` or :math:`f = 0` no extra forward is run and nothing is printed;
    the code reseeds from ``time.time()`` for same-randomness, this class restores the torch
    RNG state; ``maximize`` (the search runs on :math:`-f`, so ``f_star`` must bound
    :math:`-f`) and per-group caps are additions.

    Args:
        params: parameters or param groups.
        lr: the largest step size, default 10.
        c: Armijo constant, default 0.5.
        c_p: Polyak constant, default 0.1.
        delta: backtracking factor, default 0.5.
        xi: Zhang-Hager averaging weight in [0, 1] (0 is the monotone search), default 1.
        min_eta: the smallest initial step, default 1e-6.
        f_star: the lower bound in the Polyak step, default 0.
        save_backtracks: the resetting technique (start from :math:`\delta^{l_k}\eta_0`), default True.
        max_backtracks: trials per search, default 100.
        same_randomness: restore the RNG state before every trial, default True.
        maximize: ascend the objective instead.
        foreach: vector operations as ``torch._foreach_*`` (same result).
    """

    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = MappingProxyType(
        {
            "c": Interval(0.0, 1.0, low_open=True, high_open=True),
            "c_p": POSITIVE,
            "delta": Interval(0.0, 1.0, low_open=True, high_open=True),
            "xi": Interval(0.0, 1.0),
            "min_eta": POSITIVE,
            "f_star": Interval(),
            "save_backtracks": Boolean(),
            "max_backtracks": Integer(1),
            "same_randomness": Boolean(),
        }
    )
    search_state = ("step_size", "q", "c_ref", "backtrack_memory")

    def __init__(
        self,
        params: Any,
        lr: float = 10.0,
        c: float = 0.5,
        c_p: float = 0.1,
        delta: float = 0.5,
        xi: float = 1.0,
        min_eta: float = 1e-6,
        f_star: float = 0.0,
        save_backtracks: bool = True,
        max_backtracks: int = 100,
        same_randomness: bool = True,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            c=c,
            c_p=c_p,
            delta=delta,
            xi=xi,
            min_eta=min_eta,
            f_star=f_star,
            save_backtracks=save_backtracks,
            max_backtracks=max_backtracks,
            same_randomness=same_randomness,
            maximize=maximize,
            foreach=foreach,
        )

    def _initial_scalar(self, name: str, group: ParamGroup) -> float:
        return 0.0

    def _search_step(self, entries: list[Entry], loss: Any, evaluator: TrialEvaluator) -> None:
        settings = self.param_groups[0]
        foreach = self.use_foreach()
        caps = [float(e.group["lr"]) for e in entries]
        max_cap = max(caps)
        f0 = evaluator.sign * as_float(loss)
        grads = [e.grad for e in entries]
        slopes = [inner([g], [g]) for g in grads]
        grad_sq = sum(slopes)
        memory = self.shared(entries, "backtrack_memory")

        q, c_ref = zhang_hager_reference(self.shared(entries, "q"), self.shared(entries, "c_ref"), f0, settings["xi"])
        self.write_shared(entries, "q", q)
        self.write_shared(entries, "c_ref", c_ref)
        reference = max(c_ref, f0)

        eta0 = (f0 - settings["f_star"]) / (settings["c_p"] * grad_sq + 1e-8)
        if settings["save_backtracks"]:
            eta0 *= settings["delta"] ** memory
        eta0 = min(max(eta0, settings["min_eta"]), max_cap)
        backtracks = 0
        if max_cap > 0.0 and not math.isfinite(grad_sq):
            # Not checked for (no host sync is added for it): a NaN gradient reaches the parameters.
            set_trial_point(
                [e.param for e in entries], [e.origin for e in entries], grads, [-FALLBACK_STEP] * len(grads), foreach
            )
        elif max_cap > 0.0 and math.sqrt(grad_sq) >= 1e-8 and f0 != 0.0:
            params = [e.param for e in entries]
            origin = [e.origin for e in entries]

            def phi(eta: float) -> float:
                set_trial_point(params, origin, grads, [-min(eta, cap) for cap in caps], foreach)
                return evaluator.loss_at_trial()

            def model(eta: float) -> float:
                return sum(min(eta, cap) * s for cap, s in zip(caps, slopes, strict=True))

            budget = settings["max_backtracks"]
            result = armijo_search(phi, reference, model, eta0, settings["c"], settings["delta"], budget)
            if result.accepted:
                eta, cuts = result.step_size, result.backtracks
            else:
                eta, cuts = FALLBACK_STEP, budget - 1
                set_trial_point(params, origin, grads, [-min(FALLBACK_STEP, cap) for cap in caps], foreach)
            backtracks = result.backtracks
            self.write_shared(entries, "backtrack_memory", max(memory + cuts - 1, 0.0))
            self.write_shared(entries, "step_size", eta)
        self.record_backtracks(entries, backtracks)
