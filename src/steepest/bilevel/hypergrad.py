r"""Hypergradients of :math:`F(x) = f(y^*(x), x)` with :math:`y^*(x) = \arg\min_y g(y, x)`.

Three estimators, all pure functions of ``(f, g, y, x)`` built on ``torch.func``:

* :func:`itd_hypergrad`: iterative differentiation, reverse mode through ``T`` gradient steps
  :math:`y_{t+1} = y_t - \eta \nabla_y g(y_t, x)` (full or truncated to the last ``K`` steps).
* :func:`aid_hypergrad`: approximate implicit differentiation, :math:`\nabla F = \nabla_x f -
  \nabla^2_{xy} g\, v` with :math:`\nabla^2_{yy} g\, v = \nabla_y f`, the linear system solved by
  conjugate gradient or a Neumann series.
* :func:`penalty_hypergrad`: the first-order value-function penalty gradient (no second derivatives).

Conventions: objectives take the inner variables first, ``g(y, x)`` and ``f(y, x)``, and return a
0-dim tensor; ``y`` and ``x`` are tensors or pytrees of tensors (e.g. a dict of hyperparameters). The
inputs are detached on entry, so the results never carry an autograd graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor
from torch.func import grad_and_value

from steepest.bilevel import _tree as tree
from steepest.bilevel._derivatives import Objective, cross_xy, grad_x, grad_y, grad_y_value, grads, hessian_yy
from steepest.bilevel._tree import Tree
from steepest.bilevel.solvers import conjugate_gradient, neumann_series


@dataclass(frozen=True)
class InnerSolve:
    """The result of :func:`inner_gradient_descent`.

    Attributes:
        y: the last iterate (detached).
        steps: gradient steps taken.
        grad_norm: ‖∇_y g‖ at the iterate where the tolerance check stopped or last ran (NaN when
            ``tol`` = 0 and steps > 0: the norm is not computed, to save a synchronization per step).
    """

    y: Tree
    steps: int
    grad_norm: float


@dataclass(frozen=True)
class Hypergradient:
    """A hypergradient estimate and what it cost.

    Attributes:
        grad: the estimate of ∇F(x), a tree shaped like ``x``.
        y: the inner variables it was computed at (for ITD: the last unrolled iterate).
        outer_value: f(y, x) at those inner variables.
        v: the adjoint vector (AID: the solution of ∇²_yy g·v = ∇_y f), else ``None``.
        residual_norm: ‖∇_y f − ∇²_yy g·v‖ for AID, else ``None``.
        hvps: Hessian-vector products (AID) or unrolled differentiable steps (ITD).
    """

    grad: Tree
    y: Tree
    outer_value: float
    v: Tree | None = None
    residual_norm: float | None = None
    hvps: int = 0


def inner_gradient_descent(g: Objective, y: Tree, x: Tree, *, lr: float, steps: int, tol: float = 0.0) -> InnerSolve:
    """Run ``steps`` gradient steps ``y ← y − lr ∇_y g(y, x)`` without building a graph.

    Stops early once ‖∇_y g‖ ≤ ``tol``. For a μ-strongly convex ``g`` this certifies
    ‖y − y*‖ ≤ tol / μ. The gradients come from plain ``torch.autograd`` rather than ``torch.func.grad``:
    these loops need no higher derivatives, and on small problems the transform's per-call overhead made
    them about 4x slower.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    y, x = tree.detach(y), tree.detach(x)
    grad_norm = float("nan")
    taken = 0
    for _ in range(steps):
        gy = grad_y_value(g, y, x)[0]
        if tol > 0:
            grad_norm = float(tree.norm(gy))
            if grad_norm <= tol:
                break
        y = tree.add(y, gy, -lr)
        taken += 1
    if steps == 0:
        grad_norm = float(tree.norm(grad_y_value(g, y, x)[0]))
    return InnerSolve(y, taken, grad_norm)


def itd_hypergrad(
    f: Objective, g: Objective, y0: Tree, x: Tree, *, lr: float, steps: int, truncate: int | None = None
) -> Hypergradient:
    r"""Iterative differentiation: the exact gradient of :math:`x \mapsto f(y_T(x), x)`.

    Papers: Maclaurin, Duvenaud, Adams, "Gradient-based Hyperparameter Optimization through Reversible
    Learning", ICML 2015, arXiv:1502.03492; Franceschi, Donini, Frasconi, Pontil, "Forward and Reverse
    Gradient-Based Hyperparameter Optimization", ICML 2017, arXiv:1703.01785. Truncation: Shaban, Cheng,
    Hatch, Boots, "Truncated Back-propagation for Bilevel Optimization", AISTATS 2019, arXiv:1810.10667.

    Unrolls :math:`y_{t+1} = y_t - \eta \nabla_y g(y_t, x)` for ``steps`` = T steps from ``y0`` (held
    constant) and differentiates in reverse mode through the last ``truncate`` = K steps (all T when
    ``None``); the first T − K steps run without a graph. Memory grows linearly in K (every step keeps its
    activations and its inner-gradient graph); for strongly convex g the truncation bias decays like
    :math:`(1 - \eta\mu)^K`.

    Differences from the papers: reverse mode only (no forward mode); plain gradient descent as the
    inner dynamics.

    Example:
        >>> import torch
        >>> g = lambda y, x: 0.5 * ((y - x) ** 2).sum()
        >>> f = lambda y, x: 0.5 * (y ** 2).sum()
        >>> out = itd_hypergrad(f, g, torch.zeros(2), torch.ones(2), lr=0.5, steps=30)
        >>> out.grad  # y*(x) = x, so ∇F = x
        tensor([1., 1.])
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if truncate is not None and not 0 <= truncate <= steps:
        raise ValueError(f"truncate must be in [0, steps], got {truncate}")
    kept = steps if truncate is None else truncate
    x = tree.detach(x)
    y_start = inner_gradient_descent(g, y0, x, lr=lr, steps=steps - kept).y if kept < steps else tree.detach(y0)

    def unrolled(x_: Tree) -> tuple[Tensor, Tree]:
        y = y_start
        for _ in range(kept):
            y = tree.add(y, grad_y(g, y, x_), -lr)
        return f(y, x_), y

    hypergrad, (value, y_last) = grad_and_value(unrolled, has_aux=True)(x)
    return Hypergradient(hypergrad, tree.detach(y_last), float(value), hvps=kept)


def aid_hypergrad(
    f: Objective,
    g: Objective,
    y: Tree,
    x: Tree,
    *,
    solver: Literal["cg", "neumann"] = "cg",
    tol: float = 1e-10,
    max_iter: int = 100,
    neumann_step: float | None = None,
    neumann_terms: int = 100,
    v0: Tree | None = None,
) -> Hypergradient:
    r"""Approximate implicit differentiation at the given (approximate) inner solution ``y``.

    .. math::

        \nabla F(x) \approx \nabla_x f(y, x) - \nabla^2_{xy} g(y, x)\, v, \qquad
        \nabla^2_{yy} g(y, x)\, v = \nabla_y f(y, x).

    * ``solver="cg"``: conjugate gradient (HOAG, Pedregosa, ICML 2016, arXiv:1602.02355; iMAML,
      Rajeswaran, Finn, Kakade, Levine, NeurIPS 2019, arXiv:1909.04630) until ‖residual‖ ≤ ``tol`` or
      ``max_iter`` Hessian-vector products; ``v0`` warm-starts it (pass the previous ``v``).
    * ``solver="neumann"``: ``neumann_terms`` terms of :math:`\eta\sum_k (I - \eta H)^k` (Lorraine,
      Vicol, Duvenaud, AISTATS 2020, arXiv:1911.02590) with ``neumann_step`` = η < 2/λ_max(H). The η in
      front of the sum is included here (forgetting it, i.e. using ∂_xΦ = −∇²_xy g for Φ = y − η∇_y g,
      is the classic bug).

    The error is bounded by c₁‖y − y*‖ + c₂‖residual‖ (Ji, Yang, Liang, arXiv:2010.07962; Grazzi et al.,
    arXiv:2006.16218), so accuracy is set by the inner solve that produced ``y`` and by ``tol`` /
    ``max_iter`` / ``neumann_terms``. Memory does not depend on how many inner steps produced ``y``.

    Example:
        >>> import torch
        >>> g = lambda y, x: 0.5 * ((y - x) ** 2).sum() + 0.5 * (y ** 2).sum()  # y* = x / 2
        >>> f = lambda y, x: 0.5 * (y ** 2).sum()
        >>> x = torch.tensor([2.0, 4.0])
        >>> aid_hypergrad(f, g, x / 2, x).grad  # F = ‖x‖²/8
        tensor([0.5000, 1.0000])
    """
    if solver not in ("cg", "neumann"):
        raise ValueError(f"solver must be 'cg' or 'neumann', got {solver!r}")
    y, x = tree.detach(y), tree.detach(x)
    value = f(y, x)
    fy, fx = grads(f, y, x)
    hvp = hessian_yy(g, y, x)
    if solver == "cg":
        solve = conjugate_gradient(hvp, fy, None if v0 is None else tree.detach(v0), tol=tol, max_iter=max_iter)
    else:
        if neumann_step is None:
            raise ValueError("solver='neumann' needs neumann_step (η < 2 / λ_max of ∇²_yy g)")
        solve = neumann_series(hvp, fy, step=neumann_step, terms=neumann_terms)
    v = tree.detach(solve.solution)
    hypergrad = tree.sub(fx, cross_xy(g, y, x)(v))
    return Hypergradient(tree.detach(hypergrad), y, float(value), v, solve.residual_norm, solve.iterations)


def penalty_hypergrad(f: Objective, g: Objective, y_sigma: Tree, z: Tree, x: Tree, sigma: float) -> Tree:
    r"""The first-order penalty gradient :math:`\nabla\psi_\sigma(x)` (no second derivatives).

    Kwon, Kwon, Wright, Nowak, "On Penalty Methods for Nonconvex Bilevel Optimization and First-Order
    Stochastic Approximation", ICLR 2024, arXiv:2309.01753. With :math:`h_\sigma = \sigma f + g`,
    :math:`\psi_\sigma(x) = (\min_y h_\sigma(y, x) - \min_y g(y, x))/\sigma` and

    .. math::

        \nabla\psi_\sigma(x) = \nabla_x f(y_\sigma, x) + \frac{\nabla_x g(y_\sigma, x) - \nabla_x g(z, x)}{\sigma},

    where ``y_sigma`` ≈ argmin h_σ(·, x) and ``z`` ≈ argmin g(·, x). :math:`|\psi_\sigma - F| = O(\sigma)`
    and :math:`\|\nabla\psi_\sigma - \nabla F\| = O(\sigma)`; the 1/σ difference cancels catastrophically,
    so both inner points must be accurate to O(σε) (use float64 for small σ).

    Example:
        >>> import torch
        >>> f = lambda y, x: 0.5 * ((y - 1.0) ** 2).sum() + 0.5 * (x ** 2).sum()
        >>> g = lambda y, x: 0.5 * ((y - x) ** 2).sum()
        >>> x = torch.tensor([3.0])
        >>> sigma = 0.01  # y_σ = (σ + x) / (1 + σ), z = x
        >>> penalty_hypergrad(f, g, (sigma + x) / (1 + sigma), x, x, sigma)  # x + (x - 1) / (1 + σ)
        tensor([4.9802])
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    y_sigma, z, x = tree.detach(y_sigma), tree.detach(z), tree.detach(x)
    fx = grad_x(f, y_sigma, x)
    gap = tree.sub(grad_x(g, y_sigma, x), grad_x(g, z, x))
    return tree.detach(tree.add(fx, gap, 1.0 / sigma))


def penalty_inner_objective(f: Objective, g: Objective, sigma: float) -> Objective:
    """h_σ(y, x) = σ f(y, x) + g(y, x), the objective whose minimizer is ``y_sigma``."""
    return lambda y, x: sigma * f(y, x) + g(y, x)
