"""SLS: stochastic Armijo line search (Vaswani et al. 2019), for the SGD and the Adam direction."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from torch import Tensor

from steepest.optim._base import ParamGroup, StateSpec
from steepest.optim._linesearch import (
    TrialEvaluator,
    armijo_search,
    as_float,
    goldstein_search,
    inner,
    set_trial_point,
)
from steepest.optim._step_size_base import Entry, StepSizeOptimizer
from steepest.optim._validation import POSITIVE, Boolean, Integer, Interval, OneOf, Rule

#: Step size the SLS and AdaSLS codes fall back to when no trial passes.
FALLBACK_STEP = 1e-6

_SLS_RULES: Mapping[str, Rule] = MappingProxyType(
    {
        "init_step_size": POSITIVE,
        "c": Interval(0.0, 1.0, low_open=True, high_open=True),
        "beta_b": Interval(0.0, 1.0, low_open=True, high_open=True),
        "beta_f": Interval(1.0),
        "gamma": Interval(1.0),
        "reset_option": OneOf((0, 1, 2)),
        "n_batches_per_epoch": Integer(1),
        "line_search": OneOf(("armijo", "goldstein")),
        "direction": OneOf(("sgd", "adam")),
        "max_backtracks": Integer(1),
        "same_randomness": Boolean(),
    }
)


def reset_step(previous: float, option: int, init_step_size: float, gamma: float, n_batches_per_epoch: int) -> float:
    """The first trial step of a search from the last accepted one (SLS ``reset_option``).

    0: keep it; 1: grow it by ``gamma^(1/n_batches_per_epoch)`` (a factor ``gamma`` per epoch);
    2: restart from ``init_step_size``.
    """
    if option == 0:
        return previous
    if option == 1:
        return previous * gamma ** (1.0 / n_batches_per_epoch)
    return init_step_size


class SLS(StepSizeOptimizer):
    r"""Stochastic line search: SGD (or an Adam-preconditioned step) with an Armijo step size.

    Paper: Vaswani, Mishkin, Laradji, Schmidt, Gidel, Lacoste-Julien, "Painless Stochastic
    Gradient: Interpolation, Line-Search, and Convergence Rates", NeurIPS 2019,
    arXiv:1905.09997. The Adam direction is AdaSLS: Vaswani, Laradji, Kunstner, Meng, Schmidt,
    Lacoste-Julien, "Adaptive Gradient Methods Converge Faster with Over-Parameterization (but
    you should do a line-search)", 2020, arXiv:2006.06835. Official code: IssamLaradji/sls and
    IssamLaradji/ada_sls (read, not copied).

    Each step, on the mini-batch loss :math:`f` with gradient :math:`g` at :math:`w_0`:

    1. :math:`\eta_0` = reset(:math:`\eta_{prev}`): option 0 keeps it, 1 multiplies it by
       :math:`\gamma^{1/n_b}` (``n_batches_per_epoch``), 2 restarts at ``init_step_size``;
       then :math:`\eta_0 \leftarrow \min(\eta_0, \max_{groups} lr)`.
    2. Direction :math:`d = g` (``direction="sgd"``), or for ``"adam"``:
       :math:`v \leftarrow \beta v + (1-\beta) g^2`, :math:`P = 1/(\sqrt{v/(1-\beta^t)} + \epsilon)`,
       :math:`d = P \odot g`.
    3. Armijo (default): try :math:`\eta = \eta_0, \beta_b\eta_0, \dots` at
       :math:`w = w_0 - \min(\eta, lr_{group})\, d` until
       :math:`f(w) \le f - c \sum_{groups} \min(\eta, lr_{group})\, g^\top d`
       (with one group and :math:`\eta \le lr`: :math:`f(w) \le f - c\,\eta\, g^\top d`, the paper's test).
       If ``max_backtracks`` trials fail, step with :math:`10^{-6}` and store
       :math:`\eta_0\beta_b^{100}` (SGD; the SLS code) or :math:`10^{-6}` (Adam; the AdaSLS code).
       Goldstein (``line_search="goldstein"``): also require
       :math:`f(w) \ge f - (1-c)\,\eta\, g^\top d`; grow :math:`\eta \leftarrow \min(\beta_f\eta, lr)`
       when only Armijo holds, shrink when only this holds; no fallback.
    4. For ``"adam"`` with ``momentum`` :math:`\mu > 0` the final step uses
       :math:`m \leftarrow \mu m + (1-\mu) g`, :math:`w = w_0 - \eta P \odot m/(1-\mu^t)`.
    5. SGD direction: no step when :math:`\|g\| < 10^{-8}` (the stored :math:`\eta` is
       :math:`\eta_0`), as the SLS code. The Adam direction has no such check (the AdaSLS code
       has it commented out): its step is invariant to the scale of the loss up to
       :math:`\epsilon`, so a loss scaled by :math:`10^{-9}` still trains.

    What ``lr`` means: the **largest step size** a group may take (the SLS code's ``eta_max``,
    default 10 as there). A scheduler lowering ``lr`` caps the search; ``lr = 0`` freezes the
    group (no trial is evaluated when every group has ``lr = 0``, and the stored step size
    is kept). The carried step size is the search's own.

    State: per parameter ``exp_avg_sq`` (Adam direction) and ``exp_avg`` (Adam with momentum);
    optimizer-wide float64 scalars copied in every parameter's state: ``step``, ``step_size``
    (the last accepted :math:`\eta`), ``n_forwards``, ``n_backwards`` (closure calls with and
    without gradients, cumulative), ``n_backtracks`` (cumulative), ``last_backtracks``.

    Defaults (SLS code, IssamLaradji/sls@1934653): ``init_step_size=1``, ``c=0.1``,
    ``beta_b=0.9``, ``gamma=2``, ``beta_f=2``, ``reset_option=1``, ``n_batches_per_epoch=500``,
    100 trials; Adam direction (ada_sls@a45f5ec): ``beta=0.99``, ``momentum=0``, ``eps=1e-8``.

    Closure contract: see :class:`~steepest.optim._step_size_base.StepSizeOptimizer`: the
    closure back-propagates only under grad mode; trial points are evaluated under
    ``torch.no_grad()`` on the same batch, with the same RNG state (``same_randomness``). A
    torch-style closure (unconditional ``loss.backward()``) takes the same steps, at a backward
    pass per trial; ``.grad`` is left at the gradient of the step's starting point.

    Differences from the paper and code:
        * The paper's appendix evaluates the line search on an independent batch; the code (and
          this class) use the same batch. The code reseeds numpy/torch from ``time.time()``
          for every closure call; this class restores the torch RNG state instead (numpy is
          never touched) and leaves the RNG where the first call left it.
        * ``lr`` caps every step (the code caps only Goldstein's growth at ``eta_max``).
        * Several param groups share one search (the code runs one search per group, each
          against the original loss); a group's step is :math:`\min(\eta, lr_{group})`. Every
          other setting is optimizer-wide: a group giving one a different value raises
          ``ValueError`` (it would be ignored).
        * ``maximize`` is an addition (the search runs on :math:`-f`).

    Args:
        params: parameters or param groups.
        lr: the largest step size (cap), default 10.
        init_step_size: the first step size before any reset, default 1.
        c: Armijo constant, default 0.1.
        beta_b: backtracking factor, default 0.9.
        gamma: growth per epoch of reset option 1, default 2.
        reset_option: 0, 1 or 2 (see above), default 1.
        n_batches_per_epoch: batches per epoch for reset option 1, default 500.
        line_search: ``"armijo"`` (default) or ``"goldstein"``.
        beta_f: Goldstein growth factor, default 2.
        direction: ``"sgd"`` (default) or ``"adam"``.
        beta: Adam second-moment decay, default 0.99.
        momentum: Adam first-moment decay for the final step, default 0.
        eps: Adam denominator constant, default 1e-8.
        max_backtracks: trials per search, default 100.
        same_randomness: restore the RNG state before every trial, default True.
        maximize: ascend the objective instead.
        foreach: vector operations as ``torch._foreach_*`` (same result).

    Example:
        >>> import torch, steepest
        >>> w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
        >>> opt = steepest.SLS([w])
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = (w ** 2).sum()
        ...     if torch.is_grad_enabled():
        ...         loss.backward()
        ...     return loss
        >>> for _ in range(20):
        ...     _ = opt.step(closure)
        >>> bool(closure() < 1e-6)
        True
    """

    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = _SLS_RULES
    search_state = ("step_size",)

    def __init__(
        self,
        params: Any,
        lr: float = 10.0,
        init_step_size: float = 1.0,
        c: float = 0.1,
        beta_b: float = 0.9,
        gamma: float = 2.0,
        reset_option: int = 1,
        n_batches_per_epoch: int = 500,
        line_search: str = "armijo",
        beta_f: float = 2.0,
        direction: str = "sgd",
        beta: float = 0.99,
        momentum: float = 0.0,
        eps: float = 1e-8,
        max_backtracks: int = 100,
        same_randomness: bool = True,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            init_step_size=init_step_size,
            c=c,
            beta_b=beta_b,
            gamma=gamma,
            reset_option=reset_option,
            n_batches_per_epoch=n_batches_per_epoch,
            line_search=line_search,
            beta_f=beta_f,
            direction=direction,
            beta=beta,
            momentum=momentum,
            eps=eps,
            max_backtracks=max_backtracks,
            same_randomness=same_randomness,
            maximize=maximize,
            foreach=foreach,
        )

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """Adam moments (like the parameter) for ``direction="adam"``, then the shared scalars."""
        shapes = super().state_shapes(param, group)
        if group["direction"] == "adam":
            shapes["exp_avg_sq"] = (tuple(param.shape), param.dtype)
            if group["momentum"] > 0:
                shapes["exp_avg"] = (tuple(param.shape), param.dtype)
        return shapes

    def _initial_scalar(self, name: str, group: ParamGroup) -> float:
        return float(group["init_step_size"]) if name == "step_size" else 0.0

    def _directions(self, entries: list[Entry], settings: ParamGroup) -> tuple[list[Tensor], list[Tensor]]:
        """The search direction and the final-step direction per entry."""
        if settings["direction"] == "sgd":
            grads = [e.grad for e in entries]
            return grads, grads
        t = self.shared(entries, "step") + 1.0
        beta, mu, eps = settings["beta"], settings["momentum"], settings["eps"]
        search, final = [], []
        for e in entries:
            v = e.state["exp_avg_sq"]
            v.mul_(beta).addcmul_(e.grad.to(v.dtype), e.grad.to(v.dtype), value=1.0 - beta)
            precond = 1.0 / ((v.to(e.grad.dtype) / (1.0 - beta**t)).sqrt() + eps)
            search.append(precond * e.grad)
            if mu > 0:
                m = e.state["exp_avg"]
                m.mul_(mu).add_(e.grad.to(m.dtype), alpha=1.0 - mu)
                final.append(precond * m.to(e.grad.dtype) / (1.0 - mu**t))
            else:
                final.append(search[-1])
        return search, final

    def _search_step(self, entries: list[Entry], loss: Any, evaluator: TrialEvaluator) -> None:
        settings = self.param_groups[0]
        foreach = self.use_foreach()
        caps = [float(e.group["lr"]) for e in entries]
        max_cap = max(caps)
        f0 = evaluator.sign * as_float(loss)
        search_dir, final_dir = self._directions(entries, settings)
        slopes = [inner([e.grad], [d]) for e, d in zip(entries, search_dir, strict=True)]
        grad_norm = math.sqrt(sum(inner([e.grad], [e.grad]) for e in entries))
        eta0 = reset_step(
            self.shared(entries, "step_size"),
            settings["reset_option"],
            settings["init_step_size"],
            settings["gamma"],
            settings["n_batches_per_epoch"],
        )
        eta0 = min(eta0, max_cap)
        if max_cap == 0.0:
            self.record_backtracks(entries, 0)
            return
        if grad_norm < 1e-8 and settings["direction"] == "sgd":
            self.write_shared(entries, "step_size", eta0)
            self.record_backtracks(entries, 0)
            return
        params = [e.param for e in entries]
        origin = [e.origin for e in entries]

        def move(eta: float, directions: list[Tensor]) -> None:
            set_trial_point(params, origin, directions, [-min(eta, cap) for cap in caps], foreach)

        def phi(eta: float) -> float:
            move(eta, search_dir)
            return evaluator.loss_at_trial()

        def model(eta: float) -> float:
            return sum(min(eta, cap) * s for cap, s in zip(caps, slopes, strict=True))

        adam = settings["direction"] == "adam"
        budget = settings["max_backtracks"]
        if settings["line_search"] == "armijo":
            result = armijo_search(phi, f0, model, eta0, settings["c"], settings["beta_b"], budget)
            if result.accepted:
                eta = result.step_size
                if adam:
                    move(eta, final_dir)
            else:
                eta = FALLBACK_STEP if adam else result.step_size
                move(FALLBACK_STEP, final_dir)
        else:
            result = goldstein_search(
                phi, f0, model, eta0, settings["c"], settings["beta_b"], settings["beta_f"], max_cap, budget
            )
            eta = result.step_size
            if result.accepted and adam:
                move(eta, final_dir)
        self.write_shared(entries, "step_size", eta)
        self.record_backtracks(entries, result.backtracks)


class SLSAdam(SLS):
    r"""SLS with the Adam direction (AdaSLS with ``base_opt="adam"``); the defaults of :class:`SLS`.

    Paper: Vaswani, Laradji, Kunstner, Meng, Schmidt, Lacoste-Julien, "Adaptive Gradient Methods
    Converge Faster with Over-Parameterization (but you should do a line-search)", 2020,
    arXiv:2006.06835 (code IssamLaradji/ada_sls@a45f5ec). Same class as :class:`SLS` with
    ``direction="adam"`` by default: the Armijo search runs along :math:`P \\odot g`,
    :math:`P = 1/(\\sqrt{v/(1-\\beta^t)} + \\epsilon)`, with decrease :math:`\\sum g^2 P`. The
    paper's runs use ``init_step_size=100`` and ``c`` in {0.1, 0.2, 0.5}; the class default
    ``init_step_size=1`` is the code's. See :class:`SLS` for the closure contract, state and
    the meaning of ``lr`` (the step-size cap).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 10.0,
        init_step_size: float = 1.0,
        c: float = 0.1,
        beta_b: float = 0.9,
        gamma: float = 2.0,
        reset_option: int = 1,
        n_batches_per_epoch: int = 500,
        line_search: str = "armijo",
        beta_f: float = 2.0,
        direction: str = "adam",
        beta: float = 0.99,
        momentum: float = 0.0,
        eps: float = 1e-8,
        max_backtracks: int = 100,
        same_randomness: bool = True,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            init_step_size=init_step_size,
            c=c,
            beta_b=beta_b,
            gamma=gamma,
            reset_option=reset_option,
            n_batches_per_epoch=n_batches_per_epoch,
            line_search=line_search,
            beta_f=beta_f,
            direction=direction,
            beta=beta,
            momentum=momentum,
            eps=eps,
            max_backtracks=max_backtracks,
            same_randomness=same_randomness,
            maximize=maximize,
            foreach=foreach,
        )
