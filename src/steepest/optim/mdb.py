"""Multidimensional backtracking: a diagonal preconditioner found by cutting planes (Kunstner et al. 2023)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from steepest.optim._base import ParamGroup, StateSpec
from steepest.optim._linesearch import TrialEvaluator, as_float, set_trial_point
from steepest.optim._step_size_base import Entry, StepSizeOptimizer
from steepest.optim._validation import POSITIVE, Boolean, Integer, Interval, OneOf, Rule

#: Factor the candidate set shrinks by when a cut cannot be formed (non-finite trial, bad hyperplane).
SHRINK = 0.5


class MultidimensionalBacktracking(StepSizeOptimizer):
    r"""Gradient descent with per-coordinate step sizes searched by a cutting-plane method.

    Paper: Kunstner, Portella, Schmidt, Harvey, "Searching for Optimal Per-Coordinate
    Step-sizes with Multidimensional Backtracking", NeurIPS 2023, arXiv:2306.02527. Official
    code: fKunstner/multidimensional-backtracking@9554db2,
    ``code/src/precsearch/optimizers/preconditioner_search.py`` (read, not copied).

    A set :math:`\mathcal{S}` of candidate diagonal preconditioners is kept (``d`` = number of
    coordinates over all parameters). Each ``step``, at :math:`x` with :math:`f, g`:

    1. Tentative :math:`P` from :math:`\mathcal{S}`:

       * ``set="box"``, :math:`\mathcal{S} = \{0 \le P \le b\}`: :math:`P = b/d`;
       * ``set="ellipsoid"``, :math:`\mathcal{S} = \{P \ge 0 : \sum_i P_i^2 / D_i \le 1\}`:
         :math:`P = D \odot g^2 / (\sqrt{2d}\,\|\sqrt{D} \odot g^2\|)` (``grad_dir=True``, the
         code's wrapper default) or :math:`P = \sqrt{D}/(\sqrt{2}\,d)`;

       then :math:`P_i \leftarrow \min(P_i, lr_{group(i)})`.
    2. :math:`y = x - P \odot g`. If :math:`f(y) \le f - \tfrac12 g^\top P g`: accept
       :math:`x \leftarrow y` and grow the set (:math:`b \leftarrow \text{forward}\cdot b`, or
       :math:`D \leftarrow \sqrt{\text{forward}}\,D`); the step ends.
    3. Otherwise (a backtrack) cut with the separating hyperplane, using :math:`g_y = \nabla f(y)`:
       :math:`u = \max\big(0, (\tfrac12 g^2 - g_y \odot g)/(f - f(y) - g_y^\top P g)\big)`;
       box: :math:`b \leftarrow 1/\max(1/b, u)`; ellipsoid: :math:`\ell = \sum u^2 D`,
       :math:`\lambda = (\ell/d)(d-1)/(\ell-1)`, :math:`D \leftarrow 1/(\lambda/D + (1-\lambda)u^2)`;
       and go back to 1 (at most ``max_backtracks`` cuts; without acceptance :math:`x` stays).

    Initial set: :math:`b = s\,d` or :math:`D = (s\,d)^2` with :math:`s` = ``initial_scale``.

    The method is for the deterministic, full-batch setting (as in the paper): the closure must
    return the full objective, the same function at every call.

    What ``lr`` means: an upper bound on every per-coordinate step size of the group (default
    ``1e10``, which never binds: the method is tuning-free); a scheduler scales the bound and
    ``lr = 0`` freezes a group. Every other setting is optimizer-wide (one candidate set spans
    every coordinate of every group): a group giving one a different value raises ``ValueError``.

    State: ``bound`` per parameter (float64, like the parameter: the box corner :math:`b` or
    the ellipsoid's diagonal :math:`D` restricted to its coordinates), ``precond`` (float64,
    the last tried :math:`P`); optimizer-wide float64 scalars ``step``, ``n_forwards``,
    ``n_backwards``, ``n_backtracks`` (cuts), ``last_backtracks``.

    Defaults (the code's ``PrecSearch`` wrapper): ``set="ellipsoid"`` (the variant with the
    paper's best guarantees), ``grad_dir=True``, ``forward=2``, ``initial_scale=1``; the
    wrapper's 100 iterations per solve become ``max_backtracks=100`` cuts per step.

    Closure contract: see :class:`~steepest.optim._step_size_base.StepSizeOptimizer`; every trial
    needs :math:`\nabla f(y)`, so trial points are evaluated under ``torch.enable_grad()``.
    After an accepted step ``.grad`` holds :math:`\nabla f` at the new point.

    Differences from the code: one ``step`` runs trials until one is accepted (the code counts
    each trial as an iteration), so the gradient at an accepted point is computed again by the
    next step's first closure call (one extra forward/backward per accepted step). Where the
    code stops (a non-finite trial loss, a cut that does not shrink the set's volume, an
    invalid ellipsoid cut, where the code enters a debugger) this class shrinks the set by
    ``SHRINK`` and tries again. The per-group bound ``lr`` and ``maximize`` are additions; the
    simplex set and the ``refine`` options are not implemented.

    Args:
        params: parameters or param groups.
        lr: upper bound on the per-coordinate step sizes, default 1e10.
        set: ``"ellipsoid"`` (default) or ``"box"``.
        grad_dir: pick the ellipsoid's tentative point along :math:`g^2`, default True.
        forward: growth factor of the set after an accepted step, default 2.
        initial_scale: scale :math:`s` of the initial set, default 1.
        max_backtracks: cuts per step, default 100.
        same_randomness: restore the RNG state before every trial (a deterministic objective
            needs none; kept for models with dropout in eval-less code), default True.
        maximize: ascend the objective instead.
        foreach: vector operations as ``torch._foreach_*`` (same result).
    """

    dtensor_refusal: ClassVar[str | None] = (
        "one flat vector of all coordinates: its cutting planes couple every coordinate of every tensor"
    )
    optimizer_wide_reason = "one set of candidate preconditioners spans every coordinate of every group"
    hyperparameter_rules: ClassVar[Mapping[str, Rule]] = MappingProxyType(
        {
            "set": OneOf(("ellipsoid", "box")),
            "grad_dir": Boolean(),
            "forward": Interval(1.0),
            "initial_scale": POSITIVE,
            "max_backtracks": Integer(1),
            "same_randomness": Boolean(),
        }
    )

    def __init__(
        self,
        params: Any,
        lr: float = 1e10,
        set: str = "ellipsoid",
        grad_dir: bool = True,
        forward: float = 2.0,
        initial_scale: float = 1.0,
        max_backtracks: int = 100,
        same_randomness: bool = True,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            set=set,
            grad_dir=grad_dir,
            forward=forward,
            initial_scale=initial_scale,
            max_backtracks=max_backtracks,
            same_randomness=same_randomness,
            maximize=maximize,
            foreach=foreach,
        )

    def state_shapes(self, param: Tensor, group: ParamGroup) -> StateSpec:
        """``bound`` and ``precond`` (float64, shaped like the parameter), then the shared scalars."""
        shapes = super().state_shapes(param, group)
        shapes["bound"] = (tuple(param.shape), torch.float64)
        shapes["precond"] = (tuple(param.shape), torch.float64)
        return shapes

    def _search_step(self, entries: list[Entry], loss: Any, evaluator: TrialEvaluator) -> None:
        settings = self.param_groups[0]
        foreach = self.use_foreach()
        ellipsoid = settings["set"] == "ellipsoid"
        dim = sum(e.param.numel() for e in entries)
        for e in entries:
            if float(e.state["step"]) == 0.0 and not bool(e.state["bound"].any()):
                scale = settings["initial_scale"] * dim
                e.state["bound"].fill_(scale**2 if ellipsoid else scale)
        caps = [float(e.group["lr"]) for e in entries]
        if dim == 0 or max(caps) == 0.0:
            self.record_backtracks(entries, 0)
            return
        f0 = evaluator.sign * as_float(loss)
        g = torch.cat([e.grad.double().reshape(-1) for e in entries])
        cap = torch.cat(
            [
                torch.full((e.param.numel(),), c, dtype=torch.float64, device=g.device)
                for e, c in zip(entries, caps, strict=True)
            ]
        )
        bound = torch.cat([e.state["bound"].reshape(-1).to(g.device) for e in entries])
        params = [e.param for e in entries]
        origin = [e.origin for e in entries]
        sizes = [e.param.numel() for e in entries]
        cuts = 0
        accepted = False
        precond = torch.zeros_like(g)
        while True:
            precond = torch.minimum(self._tentative(bound, g, dim, ellipsoid, settings["grad_dir"]), cap)
            predicted = 0.5 * float((g * precond * g).sum())
            if math.isnan(predicted):
                # A NaN gradient is not checked for: it reaches the parameters, as elsewhere.
                set_trial_point(
                    params,
                    origin,
                    [(-g_i).view_as(o).to(o.dtype) for g_i, o in zip(g.split(sizes), origin, strict=True)],
                    [1.0] * len(params),
                    foreach,
                )
                accepted = True
                break
            if not predicted > 1e-300:
                break  # nothing to gain (zero gradient or a collapsed set): stay
            steps = [
                (-precond_i * g_i).view_as(e.origin)
                for precond_i, g_i, e in zip(precond.split(sizes), g.split(sizes), entries, strict=True)
            ]
            set_trial_point(
                params,
                origin,
                [s.to(o.dtype) for s, o in zip(steps, origin, strict=True)],
                [1.0] * len(params),
                foreach,
            )
            f_y = evaluator.loss_and_grad_at_trial()
            if f_y <= f0 - predicted:
                accepted = True
                bound = bound * (math.sqrt(settings["forward"]) if ellipsoid else settings["forward"])
                break
            if cuts >= settings["max_backtracks"]:
                break
            cuts += 1
            g_y = torch.cat(
                [
                    torch.zeros(e.param.numel(), dtype=torch.float64, device=g.device)
                    if e.param.grad is None
                    else evaluator.sign * e.param.grad.detach().double().reshape(-1)
                    for e in entries
                ]
            )
            bound = self._cut(bound, g, g_y, precond, f0, f_y, dim, ellipsoid)
        if not accepted:
            set_trial_point(params, origin, [torch.zeros_like(o) for o in origin], [0.0] * len(params), foreach)
        for e, b, p in zip(entries, bound.split(sizes), precond.split(sizes), strict=True):
            e.state["bound"].copy_(b.view_as(e.state["bound"]))
            e.state["precond"].copy_(p.view_as(e.state["precond"]))
        self.record_backtracks(entries, cuts)

    @staticmethod
    def _tentative(bound: Tensor, g: Tensor, dim: int, ellipsoid: bool, grad_dir: bool) -> Tensor:
        """The tentative preconditioner of the current set."""
        if not ellipsoid:
            return bound / dim
        if grad_dir:
            weighted = bound * g**2
            norm = float(torch.linalg.vector_norm(bound.sqrt() * g**2))
            if norm == 0.0 or not math.isfinite(norm):
                return torch.zeros_like(bound)
            return weighted / (norm * math.sqrt(2.0 * dim))
        return bound.sqrt() / (math.sqrt(2.0) * dim)

    @staticmethod
    def _cut(
        bound: Tensor, g: Tensor, g_y: Tensor, precond: Tensor, f0: float, f_y: float, dim: int, ellipsoid: bool
    ) -> Tensor:
        """The set after cutting away the rejected ``precond`` (or shrunk when no valid cut exists)."""
        shrunk = bound * (SHRINK**2 if ellipsoid else SHRINK)
        normalization = f0 - f_y - float((g_y * precond * g).sum())
        if not (math.isfinite(f_y) and math.isfinite(normalization) and normalization > 0):
            return shrunk
        u = torch.clamp((0.5 * g**2 - g_y * g) / normalization, min=0.0)
        if not bool(torch.isfinite(u).all()):
            return shrunk
        if not ellipsoid:
            cut = 1.0 / torch.maximum(1.0 / bound, u)
        else:
            ell = float((u**2 * bound).sum())
            lam = 0.0 if dim == 1 else (ell / dim) * (dim - 1) / (ell - 1.0)
            if not (ell > 1.0 and 0.0 <= lam <= 1.0):
                return shrunk
            cut = 1.0 / (lam / bound + (1.0 - lam) * u**2)
        # The code stops when a cut does not shrink the set (numerical trouble); we shrink it.
        if not bool(torch.isfinite(cut).all()) or float(cut.log().sum()) >= float(bound.log().sum()):
            return shrunk
        return cut
