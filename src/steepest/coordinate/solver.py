r"""Coordinate descent for :math:`\min f(x)` s.t. :math:`1^\top x = c` and, optionally, :math:`l \le x \le u`.

Paper: Ramesh, Mishkin, Schmidt, Zhou, Lavington, She, "Analyzing and Improving Greedy 2-Coordinate
Updates for Equality-Constrained Optimization via Steepest Descent in the 1-Norm", 2023,
arXiv:2307.01169. Comparison rules from libsvm: Keerthi, Shevade, Bhattacharyya, Murthy (2001, the
maximal violating pair) and Fan, Chen, Lin, JMLR 6 (2005, second-order working-set selection).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from steepest.coordinate.objectives import QuadraticObjective, SmoothObjective
from steepest.coordinate.selection import TAU, random_pair, second_order_pair, violation
from steepest.coordinate.subproblem import steepest_l1_direction

Selection = Literal["greedy", "random", "mvp", "wss2"]
Step = Literal["auto", "exact", "lipschitz"]
SELECTIONS: tuple[str, ...] = ("greedy", "random", "mvp", "wss2")


class ConvergenceWarning(UserWarning):
    """The solver stopped at ``max_iter`` before the KKT violation reached ``tol``."""


@dataclass
class SumConstrainedResult:
    r"""The outcome of :func:`minimize_sum_constrained`.

    Attributes:
        x: the final point (feasible: the sum of ``x0`` is kept, the bounds hold).
        grad: the gradient at ``x``.
        objective: f(x).
        violation: the maximal KKT violation :math:`\max_D g - \min_U g` at ``x`` (<= 0 at the optimum).
        n_iter: iterations taken (one working set each).
        converged: whether ``violation <= tol`` was reached.
        n_moved: coordinates changed, summed over iterations.
        history: f after every iteration when ``record=True``, else empty.
    """

    x: Tensor
    grad: Tensor
    objective: float
    violation: float
    n_iter: int
    converged: bool
    n_moved: int
    history: list[float] = field(default_factory=list)


def _bounds(x: Tensor, bound: Tensor | float | None, fill: float) -> Tensor:
    if bound is None:
        return torch.full_like(x, fill)
    if isinstance(bound, Tensor):
        return bound.to(dtype=x.dtype).expand_as(x).clone()
    return torch.full_like(x, float(bound))


class _State:
    """x, its gradient and the objective, with the update and snap-to-bound logic.

    Scalar reads go through NumPy views of the same CPU storage (a torch scalar read costs
    microseconds, which would dominate a 2-coordinate iteration); all O(n) work stays in torch.
    """

    def __init__(self, objective: QuadraticObjective | SmoothObjective, x: Tensor, lower: Tensor, upper: Tensor):
        self.objective = objective
        self.quadratic = isinstance(objective, QuadraticObjective)
        self.x, self.lower, self.upper = x, lower, upper
        self.grad = objective.gradient(x).contiguous()
        self._views()

    def _views(self) -> None:
        on_cpu = self.x.device.type == "cpu"
        self.xs = self.x.numpy() if on_cpu else self.x
        self.gs = self.grad.numpy() if on_cpu else self.grad
        self.ls = self.lower.numpy() if on_cpu else self.lower
        self.us = self.upper.numpy() if on_cpu else self.upper

    def refresh(self) -> None:
        if not self.quadratic:
            self.grad = self.objective.gradient(self.x).contiguous()
            self._views()

    def rows(self, idx: Tensor) -> Tensor:
        assert isinstance(self.objective, QuadraticObjective)
        return self.objective.Q.rows(idx)

    def value(self) -> float:
        if isinstance(self.objective, QuadraticObjective):
            return float(self.objective.value(self.x, self.grad))
        return float(self.objective.value(self.x))

    def move_pair(self, i: int, j: int, delta: float, rows: Tensor | None) -> None:
        """x_i -= delta, x_j += delta, landing exactly on a bound the move reaches; update g."""
        xs, ls, us = self.xs, self.ls, self.us
        xi, xj = float(xs[i]), float(xs[j])
        li, ui, lj, uj = float(ls[i]), float(us[i]), float(ls[j]), float(us[j])
        # Rooms computed as in _pair_delta, so a clipped step compares equal and lands on the bound.
        if delta > 0:
            new_i = li if delta >= xi - li else xi - delta
            new_j = uj if delta >= uj - xj else xj + delta
        else:
            new_i = ui if -delta >= ui - xi else xi - delta
            new_j = lj if -delta >= xj - lj else xj + delta
        xs[i], xs[j] = new_i, new_j
        if rows is not None:
            self.grad.add_(rows[0], alpha=new_i - xi).add_(rows[1], alpha=new_j - xj)

    def move(self, idx: Tensor, values: Tensor, rows: Tensor | None) -> None:
        """x[idx] += values, landing exactly on a bound that the move reaches; update g for quadratics."""
        lo, hi = self.lower[idx], self.upper[idx]
        old = self.x[idx]
        new = old + values
        new = torch.where((values < 0) & (new <= lo), lo, new)
        new = torch.where((values > 0) & (new >= hi), hi, new)
        self.x[idx] = new
        if rows is not None:
            self.grad.addmv_(rows.T, new - old)


def _pair_delta(state: _State, i: int, j: int, curvature: float) -> float:
    """The minimiser of the model along e_j - e_i with the given curvature, clipped to the box."""
    xs, ls, us = state.xs, state.ls, state.us
    xi, xj = float(xs[i]), float(xs[j])
    hi = min(xi - float(ls[i]), float(us[j]) - xj)  # largest delta > 0
    lo = -min(float(us[i]) - xi, xj - float(ls[j]))  # most negative delta
    delta = (float(state.gs[i]) - float(state.gs[j])) / curvature
    return min(max(delta, lo), hi)


def _pair_curvature(rows: Tensor, i: int, j: int) -> float:
    """Q_ii + Q_jj - 2 Q_ij from the rows of i and j (libsvm's TAU when not positive)."""
    r = rows.numpy() if rows.device.type == "cpu" else rows
    a = float(r[0, i]) + float(r[1, j]) - 2.0 * float(r[0, j])
    return a if a > 0 else TAU


def _pair_iteration(state: _State, i: int, j: int, step: str, lipschitz: float, rows: Tensor | None) -> int:
    """One exact (quadratic) or 1/(4 L1) step along e_j - e_i; returns the number of coordinates moved."""
    if state.quadratic and rows is None:
        rows = state.rows(torch.tensor([i, j]))
    curvature = _pair_curvature(rows, i, j) if step == "exact" and rows is not None else 4.0 * lipschitz
    delta = _pair_delta(state, i, j, curvature)
    if delta == 0.0 or not math.isfinite(delta):
        return 0
    state.move_pair(i, j, delta, rows)
    return 2


def _direction_iteration(state: _State, idx: Tensor, values: Tensor, step: str) -> int:
    """Step along a sparse feasible direction: t = 1 (Lipschitz) or exact line search in [0, t_max]."""
    rows = state.rows(idx) if state.quadratic else None
    if step == "exact" and rows is not None:
        qd = rows.T @ values
        curvature = float(torch.dot(values, qd[idx]))
        slope = float(torch.dot(state.grad[idx], values))
        room = torch.where(values < 0, state.x[idx] - state.lower[idx], state.upper[idx] - state.x[idx])
        t_max = float((room / values.abs()).min())
        t = t_max if curvature <= 0 else min(-slope / curvature, t_max)
        if t <= 0:
            return 0
        values = values * t
    state.move(idx, values, rows)
    return int(idx.numel())


def minimize_sum_constrained(
    objective: QuadraticObjective | SmoothObjective | Callable[[Tensor], Tensor],
    x0: Tensor,
    *,
    lower: Tensor | float | None = None,
    upper: Tensor | float | None = None,
    selection: Selection = "greedy",
    step: Step = "auto",
    lipschitz: float | None = None,
    tol: float = 1e-3,
    max_iter: int = 100_000,
    seed: int = 0,
    record: bool = False,
) -> SumConstrainedResult:
    r"""Minimise f(x) subject to :math:`1^\top x = 1^\top x_0` and :math:`l \le x \le u` by coordinate descent.

    Paper: Ramesh et al., "Analyzing and Improving Greedy 2-Coordinate Updates for
    Equality-Constrained Optimization via Steepest Descent in the 1-Norm", 2023, arXiv:2307.01169.

    Each iteration picks a working set, moves mass between coordinates (so the sum never changes)
    and stays inside the box. Rules (``selection``):

    * ``"greedy"`` (the paper's rule): steepest descent in the 1-norm,
      :math:`\min_d g^\top d + \tfrac{L_1}{2}\|d\|_1^2` s.t. :math:`1^\top d = 0`, :math:`l \le x+d \le u`.
      Without bounds it is the greedy 2-coordinate update :math:`i = \arg\max g`, :math:`j = \arg\min g`;
      with bounds it is the paper's O(n log n) rule
      (:func:`~steepest.coordinate.subproblem.steepest_l1_direction`), which may move more than two
      coordinates.
    * ``"random"``: a uniformly random pair.
    * ``"mvp"``: libsvm's maximal violating pair (WSS 1), :math:`i = \arg\max_D g`, :math:`j = \arg\min_U g`.
    * ``"wss2"``: libsvm's second-order rule (Fan, Chen, Lin 2005; quadratics only).

    Steps (``step``): ``"exact"`` (quadratics; the default for them) minimises f exactly along the
    chosen direction within the box, which for a pair is
    :math:`\delta = (g_i - g_j)/(Q_{ii} + Q_{jj} - 2Q_{ij})` clipped; ``"lipschitz"`` (the default
    otherwise) takes :math:`\delta = (g_i - g_j)/(4L_1)` for a pair and the full 1-norm
    steepest-descent step for ``"greedy"``, which decreases f by at least
    :math:`(g_i - g_j)^2/(8L_1)` in the sum-only case.

    Stopping: the maximal KKT violation :math:`\max_{x_t > l_t} g_t - \min_{x_t < u_t} g_t` (libsvm's
    ``Gmax + Gmax2``) at most ``tol``.

    Differences from the paper: with ``step="exact"`` the 1-norm subproblem of ``"greedy"`` is scaled
    by the curvature along the head pair, :math:`L = (Q_{ii} + Q_{jj} - 2Q_{ij})/4` (the paper's
    practical :math:`L_{ij}` variant; without active bounds this is exactly the optimal pair step), and
    the step along the resulting direction is an exact line search inside the box (at least the decrease
    of the fixed step). The pair Lipschitz step uses the bound :math:`L_{ij} \le 4L_1`. Unlike libsvm
    there is no shrinking and no single-precision kernel cache.

    Args:
        objective: a :class:`QuadraticObjective`, a :class:`SmoothObjective`, or a callable f(x)
            (wrapped as a :class:`SmoothObjective`; its gradient is recomputed each iteration).
        x0: feasible start, 1-D; its sum is the constraint's right-hand side. Not modified.
        lower: lower bounds (tensor or scalar; None = unbounded).
        upper: upper bounds (tensor or scalar; None = unbounded).
        selection: working-set rule, see above. Default ``"greedy"``.
        step: ``"auto"``, ``"exact"`` or ``"lipschitz"``.
        lipschitz: :math:`L_1`, the 1-norm Lipschitz constant of the gradient,
            :math:`\|\nabla f(x) - \nabla f(y)\|_\infty \le L_1\|x - y\|_1`. For a quadratic with PSD Q
            the default is :math:`\max_i Q_{ii}` (= :math:`\max_{ij}|Q_{ij}|`); required otherwise.
        tol: KKT-violation tolerance, default 1e-3 (libsvm's ``-e``).
        max_iter: iteration cap; a :class:`ConvergenceWarning` is issued when it is hit.
        seed: seed of the random pair rule.
        record: keep f after every iteration in ``history``.

    Returns:
        A :class:`SumConstrainedResult`.

    Example:
        >>> import torch
        >>> f = QuadraticObjective(torch.eye(3), -torch.tensor([1.0, 2.0, 3.0]))
        >>> res = minimize_sum_constrained(f, torch.zeros(3), tol=1e-10)
        >>> res.x  # projection of (1, 2, 3) onto {sum x = 0}
        tensor([-1.,  0.,  1.])
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if step not in ("auto", "exact", "lipschitz"):
        raise ValueError(f"step must be 'auto', 'exact' or 'lipschitz', got {step!r}")
    if tol <= 0 or max_iter < 0:
        raise ValueError(f"need tol > 0 and max_iter >= 0, got tol={tol}, max_iter={max_iter}")
    if x0.ndim != 1 or x0.numel() < 2:
        raise ValueError("x0 must be a 1-D tensor with at least two entries")
    if not isinstance(objective, QuadraticObjective | SmoothObjective):
        objective = SmoothObjective(objective)
    quadratic = isinstance(objective, QuadraticObjective)
    if step == "auto":
        step = "exact" if quadratic else "lipschitz"
    if step == "exact" and not quadratic:
        raise ValueError("step='exact' needs a QuadraticObjective")
    if selection == "wss2" and not quadratic:
        raise ValueError("selection='wss2' needs a QuadraticObjective (it reads Q)")
    x = x0.detach().clone()
    lo, hi = _bounds(x, lower, -math.inf), _bounds(x, upper, math.inf)
    if bool((x < lo).any() or (x > hi).any()):
        raise ValueError("x0 violates the bounds")
    if isinstance(objective, QuadraticObjective):
        q_diag = objective.Q.diagonal()
        if lipschitz is None:
            lipschitz = float(q_diag.max())
    elif lipschitz is None:
        raise ValueError("lipschitz (L1) is required for a non-quadratic objective")
    if lipschitz <= 0:
        raise ValueError(f"lipschitz must be positive, got {lipschitz}")
    bounded = bool(torch.isfinite(lo).any() or torch.isfinite(hi).any())

    state = _State(objective, x, lo, hi)
    generator = torch.Generator().manual_seed(seed)
    history: list[float] = []
    n_moved = 0
    it = 0
    viol = math.inf
    while True:
        viol, i, j = violation(state.grad, state.x > lo, state.x < hi)
        if viol <= tol or it >= max_iter:
            break
        rows = None
        if selection == "greedy" and bounded:
            scale = lipschitz
            if step == "exact":
                # The paper's practical L_ij: the curvature along the head pair's direction.
                rows = state.rows(torch.tensor([i, j]))
                scale = _pair_curvature(rows, i, j) / 4.0
            mass = viol / (4.0 * scale)
            if state.xs[i] - state.ls[i] >= mass and state.us[j] - state.xs[j] >= mass:
                # The heads absorb the whole 1-norm steepest-descent move: a pair step.
                n_moved += _pair_iteration(state, i, j, step, lipschitz, rows)
            else:
                d_idx, d_val = steepest_l1_direction(state.grad, state.x, lo, hi, scale, heads=(i, j))
                if d_idx.numel():
                    n_moved += _direction_iteration(state, d_idx, d_val, step)
        else:
            if selection == "random":
                i, j = random_pair(x.numel(), generator)
            elif selection == "wss2":
                row_j = state.rows(torch.tensor([j]))[0]
                # never -1 here: argmax_D g beats g_j since the violation is positive
                i = second_order_pair(state.grad, state.x > lo, j, row_j, q_diag)
            n_moved += _pair_iteration(state, i, j, step, lipschitz, None)
        state.refresh()
        it += 1
        if record:
            history.append(state.value())
    converged = viol <= tol
    if not converged:
        warnings.warn(
            f"stopped after max_iter={max_iter} iterations with KKT violation {viol:.3g} > tol={tol}",
            ConvergenceWarning,
            stacklevel=2,
        )
    return SumConstrainedResult(
        x=state.x,
        grad=state.grad,
        objective=state.value(),
        violation=viol,
        n_iter=it,
        converged=converged,
        n_moved=n_moved,
        history=history,
    )
