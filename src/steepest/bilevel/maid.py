r"""MAID: the method of adaptive inexact descent for bilevel problems.

Paper: Salehi, Mukherjee, Roberts, Ehrhardt, "An adaptively inexact first-order method for bilevel
optimization with application to hyperparameter learning", SIAM J. Math. Data Science (2025),
arXiv:2308.10098. Official code: MohammadSadeghSalehi/MAID (``MAID.py``), read to learn the defaults.

One iteration, with lower-level accuracy ε and linear-system accuracy δ:

1. Inexact hypergradient: solve the lower level until ‖∇_y g(ỹ, x)‖/μ ≤ ε (so ‖ỹ − y*‖ ≤ ε for a
   μ-strongly convex g); conjugate gradient on ∇²_yy g·q = ∇_y f(ỹ) to residual δ; p = ∇_x f − ∇²_xy g·q.
2. A-posteriori error bound ω = c·ε + (B/μ)·δ + (L_B/μ)·ε², c = B/μ + L_{A⁻¹}‖∇_y f‖B + L_B‖∇_y f‖/μ,
   with B ≈ ‖∇²_xy g‖, L_B (Lipschitz constant of ∇²_xy g in y) and L_{A⁻¹} (of (∇²_yy g)⁻¹ in y)
   estimated on the fly and kept as running maxima. While ω/‖p‖ > 1 − η: ε ← τε, δ ← τδ, recompute.
3. Inexact backtracking: x⁺ = x − βρⁱp, ỹ⁺ solved to ε, accept when
   f(ỹ⁺) + ‖∇_y f(ỹ⁺)‖ε + L_f ε²/2 − f(ỹ) + ‖∇_y f(ỹ)‖ε ≤ −βρⁱ η² ‖p‖².
   Success: β ← βρⁱ·10/9, ε ← νε, δ ← νδ. Failure (all i): ε, δ ← τ(ε, δ) and retry, at most
   ``max_bt_loop`` times, the j-th retry with 10 + j backtracking steps.

Defaults (official code): ε = δ = 0.1, η = 1e-4, ρ = 0.9, τ = 0.5, ν = 1.05, β = 0.1, max_bt_loop = 3,
lower level and CG capped at 2000 iterations, an overall budget of 10⁶ lower-level iterations (the code's
``ll_budget``).

Differences from the paper / code: the lower-level solver is gradient descent with a user step size
(the paper's examples use FISTA); B, L_B and L_{A⁻¹} are estimated by finite differences along a random
direction of length ε around ỹ (the official estimators depend on its missing ``Utils`` module); the
sufficient-decrease constant is η² as in the official code; ∇_x f is included in p (the paper's f does
not depend on x); the accuracy-shrinking loop of step 2 stops after ``max_shrink`` rounds.

The reference value f(ỹ) of step 3: the official code compares against the loss recorded at the last
accepted step (``self.loss[-1]``), computed at the lower-level point solved to the accuracy of that
earlier iteration, while the slack term ‖∇_y f(ỹ)‖ε uses the point re-solved in step 1. We evaluate
f(ỹ) at that re-solved point, as the paper's line search states it (both terms at the ỹ of this
iteration's hypergradient, at accuracy ε). Why: when the loose early solve happened to have a lower
outer value than the accurate one (early stopping regularises, e.g. on a ridge problem with noisy
labels), the stale value is below every value the line search can reach, shrinking ε only shrinks the
slack, and the official rule never accepts a step again while each retry costs more lower-level
iterations.

The lower-level budget ``max_lower_steps`` counts every gradient step of the lower-level solver (the
initial solve, the re-solves of step 1 and the trial solves of step 3), as the code's ``ll_calls``
does; CG iterations are not counted. The official code checks it only inside the backtracking loop,
after a trial solve, so it can overshoot by one solve; we cap each solve at the steps left, so the
count never exceeds the budget. When it runs out MAID stops, warns (``RuntimeWarning``; the official
code prints) and returns the last accepted point with ``budget_exhausted=True``: the iteration in
progress is dropped, since its lower-level point is not solved to the accuracy its test needs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from steepest.bilevel import _tree as tree
from steepest.bilevel._derivatives import Objective, cross_xy, grad_y, grads, hessian_yy
from steepest.bilevel._tree import Tree
from steepest.bilevel.hypergrad import inner_gradient_descent
from steepest.bilevel.solvers import conjugate_gradient


@dataclass
class MAIDResult:
    """What :func:`maid` returns.

    Attributes:
        x: final hyperparameters. y: final inner variables.
        history: one dict per completed outer iteration: ``outer_value`` (f at the accepted point, or at
            the re-solved current point when the iteration failed), ``epsilon``, ``delta``, ``step`` (0 when
            the iteration failed), ``bound`` (ω), ``grad_norm`` (‖p‖), ``inner_steps`` and ``cg_steps``
            (cumulative).
        inner_steps: lower-level gradient steps taken in all (at most ``max_lower_steps``).
        cg_steps: conjugate-gradient iterations taken in all.
        budget_exhausted: True when the run stopped because ``max_lower_steps`` ran out (the iteration
            then in progress is not in ``history``).
    """

    x: Tree
    y: Tree
    history: list[dict[str, float]] = field(default_factory=list)
    inner_steps: int = 0
    cg_steps: int = 0
    budget_exhausted: bool = False


@dataclass
class _Counters:
    budget: float  # lower-level steps allowed in all (inf: no budget)
    inner: int = 0
    cg: int = 0
    b: float = 0.0
    l_b: float = 0.0
    l_ainv: float = 0.0


class _LowerBudgetExhausted(Exception):
    """Raised by :func:`_solve_lower` when a solve needs more steps than the budget has left."""

    def __init__(self, y: Tree) -> None:
        super().__init__("lower-level budget exhausted")
        self.y = y


def _solve_lower(g: Objective, y: Tree, x: Tree, eps: float, mu: float, lr: float, cap: int, c: _Counters) -> Tree:
    left = c.budget - c.inner
    steps = int(min(cap, left))
    out = inner_gradient_descent(g, y, x, lr=lr, steps=steps, tol=eps * mu)
    c.inner += out.steps
    if steps < cap and out.steps == steps:
        # the budget, not ``cap``, set the limit and every step went: the last iterate may still meet the
        # tolerance (a zero-step call only measures ‖∇_y g‖)
        last = inner_gradient_descent(g, out.y, x, lr=lr, steps=0)
        if not last.grad_norm <= eps * mu:
            raise _LowerBudgetExhausted(out.y)
    return out.y


def _random_like(y: Tree, length: float, gen: torch.Generator) -> Tree:
    u = tree.tree_map(lambda t: torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device), y)
    return tree.scale(u, length / float(tree.norm(u)))


def maid(
    f: Objective,
    g: Objective,
    y0: Tree,
    x0: Tree,
    *,
    mu: float,
    inner_lr: float,
    lipschitz_f: float,
    epsilon: float = 0.1,
    delta: float = 0.1,
    eta: float = 1e-4,
    rho: float = 0.9,
    tau: float = 0.5,
    nu: float = 1.05,
    beta: float = 0.1,
    max_iter: int = 100,
    max_bt_loop: int = 3,
    max_inner: int = 2000,
    max_cg: int = 2000,
    max_shrink: int = 30,
    max_lower_steps: int | None = 1_000_000,
    seed: int = 0,
) -> MAIDResult:
    """Run MAID from ``(y0, x0)`` (see the module docstring for the algorithm and its defaults).

    Args:
        f: outer objective ``(y, x) -> scalar``.
        g: inner objective ``(y, x) -> scalar``, μ-strongly convex in y.
        y0: initial inner variables (pytree; not modified).
        x0: initial hyperparameters (pytree; not modified).
        mu: a lower bound on the strong convexity of g in y.
        inner_lr: gradient-descent step for the lower level (≤ 1/L_g).
        lipschitz_f: Lipschitz constant of ∇_y f (the paper's L_f, the code's ``Lg``).
        epsilon: initial lower-level accuracy ε (default 0.1).
        delta: initial CG residual tolerance δ (default 0.1).
        eta: sufficient-decrease constant η (default 1e-4).
        rho: backtracking factor ρ (default 0.9).
        tau: accuracy shrink factor τ (default 0.5).
        nu: accuracy growth factor ν after a success (default 1.05).
        beta: initial step β (default 0.1).
        max_iter: outer iterations (default 100).
        max_bt_loop: accuracy-shrinking retries per iteration (default 3).
        max_inner: iteration cap of the lower-level solver (default 2000).
        max_cg: iteration cap of CG (default 2000).
        max_shrink: cap on the accuracy-shrinking rounds of one inexact hypergradient.
        max_lower_steps: overall budget of lower-level gradient steps (default 10⁶, the official
            ``ll_budget``; ``None``: no budget). When it runs out, MAID warns and returns the last accepted
            point (module docstring).
        seed: seeds the random directions of the constant estimates.
    """
    for name, value in (("mu", mu), ("inner_lr", inner_lr), ("epsilon", epsilon), ("delta", delta), ("beta", beta)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if not (0 < rho < 1 and 0 < tau < 1 and nu >= 1 and 0 < eta < 1 and lipschitz_f >= 0):
        raise ValueError("need 0 < rho < 1, 0 < tau < 1, nu >= 1, 0 < eta < 1, lipschitz_f >= 0")
    for name, count, least in (("max_iter", max_iter, 0), ("max_bt_loop", max_bt_loop, 1), ("max_inner", max_inner, 1),
                               ("max_cg", max_cg, 1), ("max_shrink", max_shrink, 1)):  # fmt: skip
        if isinstance(count, bool) or not isinstance(count, int) or count < least:
            raise ValueError(f"{name} must be an int >= {least}, got {count!r}")
    if max_lower_steps is not None and (isinstance(max_lower_steps, bool) or not isinstance(max_lower_steps, int)
                                        or max_lower_steps < 1):  # fmt: skip
        raise ValueError(f"max_lower_steps must be an int >= 1 or None, got {max_lower_steps!r}")
    gen = torch.Generator().manual_seed(seed)
    c = _Counters(budget=float("inf") if max_lower_steps is None else max_lower_steps)
    x, y = tree.detach(x0), tree.detach(y0)
    history: list[dict[str, float]] = []

    def result(exhausted: bool) -> MAIDResult:
        if exhausted:
            warnings.warn(
                f"maid: the lower-level budget max_lower_steps={max_lower_steps} ran out after "
                f"{len(history)} outer iterations; returning the last accepted point",
                RuntimeWarning,
                stacklevel=3,
            )
        return MAIDResult(x, y, history, c.inner, c.cg, exhausted)

    try:
        y = _solve_lower(g, y, x, epsilon, mu, inner_lr, max_inner, c)
    except _LowerBudgetExhausted as stop:
        y = stop.y
        return result(True)

    def inexact_gradient(y: Tree, eps: float, dlt: float) -> tuple[Tree, Tree, float, float, float]:
        omega, p = float("inf"), y
        for _ in range(max_shrink):
            y = _solve_lower(g, y, x, eps, mu, inner_lr, max_inner, c)
            fy, fx = grads(f, y, x)
            solve = conjugate_gradient(hessian_yy(g, y, x), fy, tol=dlt, max_iter=max_cg)
            c.cg += solve.iterations
            q = solve.solution
            jq = cross_xy(g, y, x)(q)
            p = tree.sub(fx, jq)
            omega = _bound(y, q, jq, fy, eps, dlt)
            if omega / max(float(tree.norm(p)), 1e-300) <= 1 - eta:
                break
            eps, dlt = tau * eps, tau * dlt
        return y, p, eps, dlt, omega

    def _bound(y: Tree, q: Tree, jq: Tree, fy: Tree, eps: float, dlt: float) -> float:
        q_norm, fy_norm = float(tree.norm(q)), float(tree.norm(fy))
        if q_norm > 0:
            c.b = max(c.b, float(tree.norm(jq)) / q_norm)
            u = _random_like(y, eps, gen)
            y_u = tree.add(y, u)
            c.l_b = max(c.l_b, float(tree.norm(tree.sub(cross_xy(g, y_u, x)(q), jq))) / (eps * q_norm))
            q_u = conjugate_gradient(hessian_yy(g, y_u, x), fy, q, tol=dlt, max_iter=max_cg)
            c.cg += q_u.iterations
            c.l_ainv = max(c.l_ainv, float(tree.norm(tree.sub(q_u.solution, q))) / (eps * max(fy_norm, 1e-300)))
        const = c.b / mu + c.l_ainv * fy_norm * c.b + c.l_b * fy_norm / mu
        return const * eps + (c.b / mu) * dlt + (c.l_b / mu) * eps**2

    def grad_norm_f(y_: Tree) -> float:
        return float(tree.norm(grad_y(f, y_, x)))

    def iteration(y: Tree, epsilon: float, delta: float, beta: float) -> tuple[Tree, float, float, float]:
        nonlocal x
        step_taken = 0.0
        omega, p_norm = float("nan"), float("nan")
        for j in range(max_bt_loop):
            y, p, epsilon, delta, omega = inexact_gradient(y, epsilon, delta)
            # the paper's f(ỹ_k): at the point just re-solved to accuracy ε (not the value stored at the
            # last accepted step, solved to an older accuracy, as the official code does)
            f_old = float(f(y, x))
            p_norm = float(tree.norm(p))
            slack_old = grad_norm_f(y) * epsilon
            accepted = False
            for i in range(10 + j):
                step = beta * rho**i
                x_new = tree.add(x, p, -step)
                y_new = _solve_lower(g, y, x_new, epsilon, mu, inner_lr, max_inner, c)
                f_new = float(f(y_new, x_new))
                lhs = f_new + float(tree.norm(grad_y(f, y_new, x_new))) * epsilon
                lhs += lipschitz_f * epsilon**2 / 2 - f_old + slack_old
                if lhs <= -step * eta**2 * p_norm**2:
                    x, y, f_old, accepted, step_taken = x_new, y_new, f_new, True, step
                    break
            if accepted:
                beta = step_taken * 10 / 9
                epsilon, delta = nu * epsilon, nu * delta
                break
            epsilon, delta = tau * epsilon, tau * delta
        history.append({
            "outer_value": f_old, "epsilon": epsilon, "delta": delta, "step": step_taken, "bound": omega,
            "grad_norm": p_norm, "inner_steps": float(c.inner), "cg_steps": float(c.cg),
        })  # fmt: skip
        return y, epsilon, delta, beta

    for _ in range(max_iter):
        try:
            y, epsilon, delta, beta = iteration(y, epsilon, delta, beta)
        except _LowerBudgetExhausted:
            return result(True)
    return result(False)

