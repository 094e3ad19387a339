r"""The outer loop: hypergradient methods as small config objects, driven by any torch optimizer.

The user gives the inner objective ``g(y, x)``, the outer objective ``f(y, x)``, initial inner
variables ``y`` (a tensor or pytree) and the hyperparameters ``x`` (a leaf tensor, or a dict / list of
leaf tensors, the same tensors handed to the optimizer). :func:`run_bilevel` alternates inner updates
and hypergradient estimates, writes the estimate to ``x.grad`` and calls ``optimizer.step()``: any
optimizer from ``steepest.create_optimizer`` or ``torch.optim`` works.

Methods (what one outer step computes):

* :class:`ITD` — unroll the inner gradient steps and back-propagate (full or truncated).
* :class:`AID` — run the inner steps without a graph, then conjugate gradient or Neumann series.
* :class:`Penalty` — first-order value-function penalty with a σ schedule (two inner loops).
* :class:`BOREP` — one warm-started linear-system step per iteration and normalized momentum.

BO-REP's *initialization refinement* (``InnerLoop.refine_steps``) and *periodic lower-level updates*
(``InnerLoop.period``) are options of :class:`InnerLoop` and work with AID, BO-REP and the penalty method.

Example:
    >>> import torch
    >>> g = lambda y, x: 0.5 * ((y - x) ** 2).sum() + 0.5 * (y ** 2).sum()  # y* = x / 2
    >>> f = lambda y, x: 0.5 * ((y - 1.0) ** 2).sum()                     # min F at x = 2
    >>> x = torch.zeros(3, requires_grad=True)
    >>> run = run_bilevel(f, g, torch.zeros(3), x, torch.optim.SGD([x], lr=2.0), AID(),
    ...                   inner=InnerLoop(lr=0.5, steps=20), outer_steps=30)
    >>> x.detach()
    tensor([2., 2., 2.])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from steepest.bilevel import _tree as tree
from steepest.bilevel._derivatives import Objective, grads, hessian_and_cross
from steepest.bilevel._tree import Tree
from steepest.bilevel.hypergrad import (
    aid_hypergrad,
    inner_gradient_descent,
    itd_hypergrad,
    penalty_hypergrad,
    penalty_inner_objective,
)


@dataclass(frozen=True)
class InnerLoop:
    """How the inner variables are updated between outer steps (plain gradient descent on g).

    Attributes:
        lr: inner step size (≤ 1/L for an L-smooth g).
        steps: inner steps per update (ITD: the unrolled steps).
        period: update the inner variables only every ``period`` outer steps and freeze them in between
            (BO-REP's periodic updates, Hao, Gong, Liu, ICLR 2024, arXiv:2401.09587; their I). Default 1.
        refine_steps: extra steps on g(·, x₀) before the first outer step (BO-REP's initialization
            refinement). Default 0.
        warm_start: start each inner run from the previous inner iterate (else from the initial ``y``).
    """

    lr: float
    steps: int = 100
    period: int = 1
    refine_steps: int = 0
    warm_start: bool = True

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"InnerLoop.lr must be > 0, got {self.lr}")
        if self.steps < 0 or self.refine_steps < 0:
            raise ValueError("InnerLoop.steps and refine_steps must be >= 0")
        if self.period < 1:
            raise ValueError(f"InnerLoop.period must be >= 1, got {self.period}")

    def update(self, g: Objective, y: Tree, y_init: Tree, x: Tree, k: int) -> Tree:
        """The inner variables to use at outer step ``k`` (no graph)."""
        if k == 0 and self.refine_steps > 0:
            y = inner_gradient_descent(g, y, x, lr=self.lr, steps=self.refine_steps).y
        if k % self.period != 0:
            return y
        start = y if self.warm_start else y_init
        return inner_gradient_descent(g, start, x, lr=self.lr, steps=self.steps).y


class Method(ABC):
    """Base of the hypergradient methods: ``step`` returns the outer descent direction for one step."""

    def init_state(self, y: Tree, x: Tree) -> dict[str, Any]:
        """Per-run state (warm starts, momentum)."""
        return {"y": y, "y_init": y}

    @abstractmethod
    def step(
        self, f: Objective, g: Objective, x: Tree, inner: InnerLoop, state: dict[str, Any], k: int
    ) -> tuple[Tree, dict[str, float]]:
        """Update ``state`` in place and return (direction, info)."""


@dataclass(frozen=True)
class ITD(Method):
    """Iterative differentiation through ``inner.steps`` unrolled steps (see :func:`itd_hypergrad`).

    Attributes:
        truncate: back-propagate through the last ``truncate`` steps only (``None``: all).
    """

    truncate: int | None = None

    def step(
        self, f: Objective, g: Objective, x: Tree, inner: InnerLoop, state: dict[str, Any], k: int
    ) -> tuple[Tree, dict[str, float]]:
        """One ITD hypergradient; the unrolled iterate becomes the next warm start."""
        if inner.period != 1:
            raise ValueError("ITD unrolls the inner loop at every outer step: InnerLoop.period must be 1")
        y = state["y"] if inner.warm_start else state["y_init"]
        if k == 0 and inner.refine_steps > 0:
            y = inner_gradient_descent(g, y, x, lr=inner.lr, steps=inner.refine_steps).y
        out = itd_hypergrad(f, g, y, x, lr=inner.lr, steps=inner.steps, truncate=self.truncate)
        state["y"] = out.y
        return out.grad, {"outer_value": out.outer_value}


@dataclass(frozen=True)
class AID(Method):
    """Approximate implicit differentiation (see :func:`aid_hypergrad` for the accuracy controls).

    Attributes:
        solver: ``"cg"`` or ``"neumann"``.
        tol, max_iter: CG stopping rule (absolute residual norm, Hessian-vector products).
        neumann_step, neumann_terms: Neumann series step η (< 2/λ_max) and number of terms.
        warm_start_v: start CG from the previous adjoint vector (HOAG / iMAML practice).
    """

    solver: Literal["cg", "neumann"] = "cg"
    tol: float = 1e-10
    max_iter: int = 100
    neumann_step: float | None = None
    neumann_terms: int = 100
    warm_start_v: bool = True

    def step(
        self, f: Objective, g: Objective, x: Tree, inner: InnerLoop, state: dict[str, Any], k: int
    ) -> tuple[Tree, dict[str, float]]:
        """Inner update, then one AID hypergradient at the new inner iterate."""
        state["y"] = inner.update(g, state["y"], state["y_init"], x, k)
        out = aid_hypergrad(
            f, g, state["y"], x, solver=self.solver, tol=self.tol, max_iter=self.max_iter,
            neumann_step=self.neumann_step, neumann_terms=self.neumann_terms,
            v0=state.get("v") if self.warm_start_v else None,
        )  # fmt: skip
        state["v"] = out.v
        return out.grad, {"outer_value": out.outer_value, "residual": out.residual_norm or 0.0, "hvps": out.hvps}


def power_sigma_schedule(sigma0: float = 1.0, power: float = 0.5, sigma_min: float = 0.0) -> Callable[[int], float]:
    """σ_k = max(σ_min, σ₀ / (k + 1)^power), a decreasing penalty schedule for :class:`Penalty`.

    The paper (Kwon et al., arXiv:2309.01753, Alg. 1) lets σ_k decrease gradually to Θ(ε); its exact
    exponents are not transcribed here (verify), so the power is a parameter.
    """
    if not sigma0 > 0 or power < 0 or sigma_min < 0:
        raise ValueError("need sigma0 > 0, power >= 0, sigma_min >= 0")
    return lambda k: max(sigma_min, sigma0 / (k + 1) ** power)


@dataclass(frozen=True)
class Penalty(Method):
    r"""The first-order penalty method (Kwon, Kwon, Wright, Nowak, ICLR 2024, arXiv:2309.01753).

    Outer step k: ``inner.steps`` warm-started gradient steps on h_σ = σ_k f + g for y_σ and on g for z
    (each with ``inner.lr``), then the direction :func:`penalty_hypergrad` — first derivatives only.
    The run's inner variables (``BilevelRun.y``, the callback's ``y``) are z, the lower-level iterate;
    y_σ is kept in ``state["y_sigma"]`` (it has seen f, so it is not a fair model of the lower level).

    Attributes:
        sigma: a constant σ or a schedule ``k -> σ_k`` (e.g. :func:`power_sigma_schedule`).

    Differences from the paper: no projections (unconstrained Y and X); both inner loops share one step size.
    """

    sigma: float | Callable[[int], float] = 0.01

    def sigma_at(self, k: int) -> float:
        """σ_k."""
        value = self.sigma(k) if callable(self.sigma) else self.sigma
        if not value > 0:
            raise ValueError(f"sigma must be > 0, got {value} at step {k}")
        return float(value)

    def init_state(self, y: Tree, x: Tree) -> dict[str, Any]:
        """Both inner points start at the given inner variables: ``y`` is z ≈ argmin g, ``y_sigma`` ≈ argmin h_σ."""
        return {"y": y, "y_init": y, "y_sigma": y}

    def step(
        self, f: Objective, g: Objective, x: Tree, inner: InnerLoop, state: dict[str, Any], k: int
    ) -> tuple[Tree, dict[str, float]]:
        """Two inner loops, then the penalty gradient; ``outer_value`` is f at z (the lower-level iterate)."""
        sigma = self.sigma_at(k)
        h_sigma = penalty_inner_objective(f, g, sigma)
        state["y_sigma"] = inner.update(h_sigma, state["y_sigma"], state["y_init"], x, k)
        state["y"] = inner.update(g, state["y"], state["y_init"], x, k)
        direction = penalty_hypergrad(f, g, state["y_sigma"], state["y"], x, sigma)
        return direction, {"outer_value": float(f(state["y"], tree.detach(x))), "sigma": sigma}


@dataclass(frozen=True)
class BOREP(Method):
    r"""BO-REP's hypergradient estimate and normalized momentum (Hao, Gong, Liu, ICLR 2024, arXiv:2401.09587).

    Per outer step (after the periodic inner update of :class:`InnerLoop`):

    .. math::

        z \leftarrow z - \nu(\nabla^2_{yy} g\, z - \nabla_y f), \quad
        \hat g = \nabla_x f - \nabla^2_{xy} g\, z, \quad
        m \leftarrow \beta m + (1 - \beta)\hat g,

    and the direction returned is :math:`m / \|m\|` (``normalize=True``), so ``torch.optim.SGD(lr=η)``
    performs the paper's update :math:`x \leftarrow x - \eta\, m/\|m\|` (each step moves x by exactly η).

    Defaults from the official code (MingruiLiu-ML-Lab/Bilevel-Optimization-under-Unbounded-Smoothness,
    hyperparam_opt): ν = 1e-2, β = 0.9; pair with ``InnerLoop(period=3, refine_steps=...)``.

    Differences from the paper: deterministic gradients (the caller may pass minibatch objectives); z is
    not projected (the official code does not project either); the normalization uses ‖m‖ + 1e-10 like
    the official code.
    """

    z_lr: float = 1e-2
    beta: float = 0.9
    normalize: bool = True

    def init_state(self, y: Tree, x: Tree) -> dict[str, Any]:
        """The adjoint z and the momentum m start at zero."""
        return {"y": y, "y_init": y, "z": tree.zeros_like(y), "m": tree.zeros_like(tree.detach(x))}

    def step(
        self, f: Objective, g: Objective, x: Tree, inner: InnerLoop, state: dict[str, Any], k: int
    ) -> tuple[Tree, dict[str, float]]:
        """Periodic inner update, one z step, momentum, normalization."""
        state["y"] = inner.update(g, state["y"], state["y_init"], x, k)
        y, xd = state["y"], tree.detach(x)
        fy, fx = grads(f, y, xd)
        second_order = hessian_and_cross(g, y, xd)  # one graph, two pullbacks
        z = tree.detach(tree.sub(state["z"], tree.scale(tree.sub(second_order(state["z"])[0], fy), self.z_lr)))
        estimate = tree.sub(fx, second_order(z)[1])  # the updated z, as in the paper
        m = tree.detach(tree.add(tree.scale(state["m"], self.beta), estimate, 1.0 - self.beta))
        state["z"], state["m"] = z, m
        m_norm = float(tree.norm(m))
        direction = tree.scale(m, 1.0 / (m_norm + 1e-10)) if self.normalize else m
        return direction, {"outer_value": float(f(y, xd)), "estimate_norm": float(tree.norm(estimate))}


@dataclass
class BilevelRun:
    """What :func:`run_bilevel` returns.

    Attributes:
        y: the final inner variables (detached).
        history: one dict per outer step: ``outer_value`` (f at the inner iterate used), ``grad_norm``
            (norm of the direction handed to the optimizer) and method-specific entries.
        state: the method's final state (warm starts, momentum).
    """

    y: Tree
    history: list[dict[str, float]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def _assign_grads(x: Tree, direction: Tree) -> None:
    for param, d in zip(tree.leaves(x), tree.leaves(direction), strict=True):
        if not param.requires_grad:
            raise ValueError("every hyperparameter tensor must be a leaf with requires_grad=True")
        param.grad = d.detach().to(param.dtype).clone()


def run_bilevel(
    f: Objective,
    g: Objective,
    y: Tree,
    x: Tree,
    optimizer: torch.optim.Optimizer,
    method: Method,
    *,
    inner: InnerLoop,
    outer_steps: int,
    callback: Callable[[int, Tree, Tree, dict[str, float]], None] | None = None,
) -> BilevelRun:
    """Minimize F(x) = f(y*(x), x) with ``optimizer`` over the hyperparameters ``x``.

    Each outer step k: ``method.step`` updates the inner variables (``inner``) and returns a descent
    direction (a hypergradient estimate), which is written to ``x.grad``; then ``optimizer.step()``.
    ``x`` must be the leaf tensors (``requires_grad=True``) the optimizer holds; they are updated in place.
    ``callback(k, x, y, info)`` is called after each optimizer step. No closure is needed, so optimizers
    whose capabilities say ``requires_closure`` are not supported.

    Args:
        f: outer objective ``f(y, x) -> scalar``.
        g: inner objective ``g(y, x) -> scalar``, strongly convex in y for the guarantees.
        y: initial inner variables (tensor or pytree); not modified.
        x: hyperparameters (leaf tensor or pytree of leaf tensors), updated in place.
        optimizer: any ``torch.optim.Optimizer`` over the leaves of ``x``.
        method: :class:`ITD`, :class:`AID`, :class:`Penalty` or :class:`BOREP`.
        inner: the inner loop settings.
        outer_steps: number of optimizer steps.
        callback: optional per-step hook.
    """
    if outer_steps < 0:
        raise ValueError(f"outer_steps must be >= 0, got {outer_steps}")
    if not isinstance(method, Method):
        raise TypeError(f"method must be ITD, AID, Penalty or BOREP, got {type(method).__name__}")
    state = method.init_state(tree.detach(y), x)
    run = BilevelRun(state["y"], state=state)
    for k in range(outer_steps):
        direction, info = method.step(f, g, x, inner, state, k)
        grad_norm = float(tree.norm(direction))
        if not math.isfinite(grad_norm):
            raise FloatingPointError(f"non-finite hypergradient at outer step {k}")
        _assign_grads(x, direction)
        optimizer.step()
        run.history.append({**info, "grad_norm": grad_norm})
        if callback is not None:
            callback(k, x, state["y"], info)
    run.y = state["y"]
    return run
