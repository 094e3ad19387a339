"""SPS and SPSmax: the stochastic Polyak step size (Loizou et al. 2021)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch

from steepest.optim._base import ParamGroup
from steepest.optim._linesearch import TrialEvaluator, as_float, refuse_grad_scaler, set_trial_point, squared_norm
from steepest.optim._step_size_base import Entry, StepSizeOptimizer
from steepest.optim._validation import NON_NEGATIVE, POSITIVE, Boolean, Integer, Interval, Optional, Rule

_SPS_RULES: Mapping[str, Rule] = MappingProxyType(
    {
        "c": POSITIVE,
        "f_star": Interval(),
        "gamma_b": Optional(POSITIVE),
        "smooth": Boolean(),
        "gamma": Interval(1.0),
        "n_batches_per_epoch": Integer(1),
        "init_step_size": NON_NEGATIVE,
    }
)


class SPS(StepSizeOptimizer):
    r"""SGD with the stochastic Polyak step size, known or per-batch f*, optionally capped.

    Paper: Loizou, Vaswani, Laradji, Lacoste-Julien, "Stochastic Polyak Step-size for SGD: An
    Adaptive Learning Rate for Fast Convergence", AISTATS 2021, arXiv:2002.10542. Official code:
    IssamLaradji/sps@6d112a1 (read, not copied).

    Each step, on the mini-batch loss :math:`f_i` with gradient :math:`g_i`:

    .. math::
        \gamma = \frac{(f_i - f_i^*)_+}{c\,\|g_i\|^2 + \epsilon}, \quad
        \gamma \leftarrow \min(\gamma, \gamma_b) \text{ (SPSmax, if ``gamma_b``)}, \quad
        \gamma \leftarrow \min(\gamma, \text{gamma}^{1/n_b}\gamma_{prev}) \text{ (if ``smooth``)},

    :math:`\gamma = 0` when :math:`\|g_i\| < 10^{-8}`; then :math:`w \leftarrow w - lr\cdot\gamma\, g_i`.
    :math:`\gamma` (without ``lr``) is stored as :math:`\gamma_{prev}`.

    ``f_star`` is the known lower bound :math:`f^*` (0 under interpolation, the default). For
    an estimated or per-batch :math:`f_i^*` (the code's ``batch['meta']['fstar']``) pass it at
    step time: ``opt.step(closure, f_star=value)``.

    What ``lr`` means: a **multiplier** of the Polyak step (default 1, the paper's method);
    ``lr = 0`` freezes a group, so learning-rate schedulers compose with SPS. The stored
    :math:`\gamma_{prev}` excludes ``lr``, so a zero ``lr`` never stalls the smoothing (the code's
    stall after one zero step, see the spec, does not happen here with ``lr``). One
    :math:`\gamma` is computed from the loss and the gradient norm over all param groups, so
    every setting but ``lr`` is optimizer-wide: a group giving one a different value raises
    ``ValueError`` (it would be ignored).

    Keys: ``sps`` is :class:`SPS` (no cap, no smoothing: the paper's SPS, the code's
    ``adapt_flag='constant'``); ``sps_max`` is :class:`SPSMax` (smoothing on, the code's default
    ``adapt_flag='smooth_iter'``, plus the paper's cap ``gamma_b`` when given).

    State (optimizer-wide float64 scalars, copied in every parameter's state): ``step``,
    ``step_size`` (:math:`\gamma_{prev}`), ``n_forwards``, ``n_backwards``, ``n_backtracks``
    and ``last_backtracks`` (always 0: no search).

    Defaults: ``c=0.5`` (paper and code), ``eps=1e-8`` (code class default; its experiment runner
    passes 0), ``gamma=2``, ``n_batches_per_epoch=500``, ``init_step_size=1`` (code).

    Closure contract: the closure back-propagates under grad mode and returns the loss; it is
    called once per step (SPS needs no trial points). Alternatively call ``loss.backward()``
    yourself and pass ``opt.step(loss=loss)``.

    ``maximize=True`` (an addition) runs SPS on the negated objective :math:`-f`, so ``f_star``
    is a lower bound of :math:`-f`: :math:`-f^*` is the **maximum** of the objective (the
    default 0 says the objective never exceeds 0, as a log-likelihood or a negated loss). The
    Polyak step is the gap to the optimum, which exists only with a true bound, and no default
    bound fits a maximized objective in general: so where a minimized loss below ``f_star``
    takes no step (the official code's rule for a per-batch :math:`f_i^*` that overshoots), a
    maximized objective above :math:`-f^*` raises ``ValueError`` before anything moves, instead
    of never moving (``maximize=True`` on a positive objective with the default ``f_star=0``).

    Differences from the code: the smoothing variant also honours ``f_star`` and ``gamma_b``
    (the code's ``smooth_iter`` ignores both; the defaults are identical); ``lr`` is a multiplier
    the code does not have; no NaN check (the library never syncs to check gradients);
    ``maximize`` is an addition (above); the ``centralize_grad`` options are not implemented.

    Args:
        params: parameters or param groups.
        lr: multiplier of the Polyak step, default 1.
        c: Polyak constant, default 0.5.
        f_star: the known lower bound of the loss (with ``maximize=True``: of the negated
            objective, i.e. minus the objective's maximum), default 0.
        gamma_b: upper bound of the step (SPSmax), default None (no bound).
        smooth: cap by ``gamma^(1/n_batches_per_epoch)`` times the last step, default False.
        gamma: smoothing growth per epoch, default 2.
        n_batches_per_epoch: batches per epoch for the smoothing, default 500.
        init_step_size: the "last step" before the first one (smoothing), default 1.
        eps: added to the denominator, default 1e-8.
        maximize: ascend the objective instead.
        foreach: vector operations as ``torch._foreach_*`` (same result).
    """

    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = _SPS_RULES
    search_state = ("step_size",)
    optimizer_wide_reason = "one Polyak step size is computed over all param groups"

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        c: float = 0.5,
        f_star: float = 0.0,
        gamma_b: float | None = None,
        smooth: bool = False,
        gamma: float = 2.0,
        n_batches_per_epoch: int = 500,
        init_step_size: float = 1.0,
        eps: float = 1e-8,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            c=c,
            f_star=f_star,
            gamma_b=gamma_b,
            smooth=smooth,
            gamma=gamma,
            n_batches_per_epoch=n_batches_per_epoch,
            init_step_size=init_step_size,
            eps=eps,
            maximize=maximize,
            foreach=foreach,
        )
        self._f_star: float | None = None

    def _initial_scalar(self, name: str, group: ParamGroup) -> float:
        return float(group["init_step_size"])

    def _same_randomness(self) -> bool:
        return False  # one closure call per step: nothing to repeat

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None, f_star: float | None = None) -> Any:
        """One SPS step; returns the loss.

        Args:
            closure: computes the loss and back-propagates (under grad mode). Required unless
                ``loss`` is given.
            loss: the loss whose gradients are already in ``.grad`` (instead of a closure).
            f_star: this batch's :math:`f_i^*` (estimated or known), overriding ``f_star``.
        """
        refuse_grad_scaler(self)
        if closure is None and loss is None:
            raise RuntimeError("SPS.step requires a closure that returns the loss (or loss= after backward)")
        self._f_star = f_star
        if closure is None:
            return self._step_with_loss(loss)
        return super().step(closure)

    def _step_with_loss(self, loss: Any) -> Any:
        sign = -1.0 if self.param_groups[0]["maximize"] else 1.0
        self._check_loss(loss, sign)
        entries = self._entries(sign)
        if entries:
            steps = [float(e.state["step"]) for e in entries]
            self._lead = steps.index(max(steps))
            evaluator = TrialEvaluator(lambda: loss, False, sign)
            self._search_step(entries, loss, evaluator)
            self._count(entries, evaluator)
        return loss

    def _check_loss(self, loss: Any, sign: float) -> None:
        """With ``maximize=True``, an objective above the maximum ``-f_star`` is refused, before any state exists."""
        settings = self.param_groups[0]
        if not settings["maximize"]:
            return
        f0 = sign * as_float(loss)
        f_star = settings["f_star"] if self._f_star is None else float(self._f_star)
        if settings["maximize"] and f0 < f_star:
            raise ValueError(
                f"{type(self).__name__}(maximize=True): the objective is {-f0:.6g}, above {-f_star:.6g}, the maximum "
                f"given by f_star={f_star:.6g} (with maximize=True, f_star bounds the negated objective from "
                "below, so -f_star is the objective's maximum). The Polyak step needs a true bound: pass "
                "f_star=-(an upper bound of the objective), or minimize the negated objective"
            )

    def _search_step(self, entries: list[Entry], loss: Any, evaluator: TrialEvaluator) -> None:
        settings = self.param_groups[0]
        foreach = self.use_foreach()
        f0 = evaluator.sign * as_float(loss)
        f_star = settings["f_star"] if self._f_star is None else float(self._f_star)
        grads = [e.grad for e in entries]
        grad_sq = squared_norm(grads, foreach)
        if math.sqrt(grad_sq) < 1e-8:
            gamma = 0.0
        else:
            gamma = max(f0 - f_star, 0.0) / (settings["c"] * grad_sq + settings["eps"])
        if settings["gamma_b"] is not None:
            gamma = min(gamma, settings["gamma_b"])
        if settings["smooth"]:
            growth = settings["gamma"] ** (1.0 / settings["n_batches_per_epoch"])
            gamma = min(gamma, growth * self.shared(entries, "step_size"))
        scales = [-float(e.group["lr"]) * gamma for e in entries]
        if any(s != 0.0 for s in scales):
            set_trial_point([e.param for e in entries], [e.origin for e in entries], grads, scales, foreach)
        self.write_shared(entries, "step_size", gamma)
        self.record_backtracks(entries, 0)


class SPSMax(SPS):
    r"""SPSmax: :class:`SPS` with the smoothing cap on by default (the code's ``smooth_iter``).

    Paper: Loizou, Vaswani, Laradji, Lacoste-Julien, "Stochastic Polyak Step-size for SGD: An
    Adaptive Learning Rate for Fast Convergence", AISTATS 2021, arXiv:2002.10542. The paper's
    SPSmax is :math:`\\min\\{(f_i - f_i^*)/(c\\|g_i\\|^2), \\gamma_b\\}`: set ``gamma_b``. The code's
    default caps instead by :math:`2^{1/n_b}` times the previous step (``smooth=True``), which
    the DL experiments of the paper use (with ``c=0.2`` there). See :class:`SPS` for the rule,
    the state, the closure contract and the meaning of ``lr`` (a multiplier).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        c: float = 0.5,
        f_star: float = 0.0,
        gamma_b: float | None = None,
        smooth: bool = True,
        gamma: float = 2.0,
        n_batches_per_epoch: int = 500,
        init_step_size: float = 1.0,
        eps: float = 1e-8,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            c=c,
            f_star=f_star,
            gamma_b=gamma_b,
            smooth=smooth,
            gamma=gamma,
            n_batches_per_epoch=n_batches_per_epoch,
            init_step_size=init_step_size,
            eps=eps,
            maximize=maximize,
            foreach=foreach,
        )
