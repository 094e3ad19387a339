r"""Bilevel optimization: hypergradients and outer loops, as plain functions over ``torch.func``.

Problem: minimize :math:`F(x) = f(y^*(x), x)` over hyperparameters ``x``, where
:math:`y^*(x) = \arg\min_y g(y, x)`. Objectives take the inner variables first, ``g(y, x)`` and
``f(y, x)``, and return a scalar tensor; ``y`` and ``x`` may be tensors or pytrees (dicts of tensors).

* Hypergradients: :func:`itd_hypergrad` (unrolled, full or truncated), :func:`aid_hypergrad` (CG or
  Neumann), :func:`penalty_hypergrad` (first-order value-function penalty).
* Outer loop: :func:`run_bilevel` with a method (:class:`ITD`, :class:`AID`, :class:`Penalty`,
  :class:`BOREP`) and an :class:`InnerLoop`, driving any ``torch.optim`` / ``steepest`` optimizer.
* :func:`maid`: the adaptively inexact method with its own backtracking line search.
* Linear solvers: :func:`conjugate_gradient`, :func:`neumann_series`.
* Ready-made tasks on scikit-learn data: :mod:`steepest.bilevel.tasks`.

For a ``torch.nn.Module`` as the inner model, pass ``y = {k: p.detach() for k, p in
model.named_parameters()}`` and write ``g(y, x)`` with ``torch.func.functional_call(model, y, inputs)``.
"""

from steepest.bilevel.hypergrad import (
    Hypergradient,
    InnerSolve,
    aid_hypergrad,
    inner_gradient_descent,
    itd_hypergrad,
    penalty_hypergrad,
    penalty_inner_objective,
)
from steepest.bilevel.maid import MAIDResult, maid
from steepest.bilevel.outer import (
    AID,
    BOREP,
    ITD,
    BilevelRun,
    InnerLoop,
    Method,
    Penalty,
    power_sigma_schedule,
    run_bilevel,
)
from steepest.bilevel.solvers import LinearSolve, conjugate_gradient, neumann_series

__all__ = [
    "AID",
    "BOREP",
    "ITD",
    "BilevelRun",
    "Hypergradient",
    "InnerLoop",
    "InnerSolve",
    "LinearSolve",
    "MAIDResult",
    "Method",
    "Penalty",
    "aid_hypergrad",
    "conjugate_gradient",
    "inner_gradient_descent",
    "itd_hypergrad",
    "maid",
    "neumann_series",
    "penalty_hypergrad",
    "penalty_inner_objective",
    "power_sigma_schedule",
    "run_bilevel",
]
