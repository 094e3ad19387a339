r"""Coordinate descent: greedy 2-coordinate and 1-norm steepest-descent updates under a sum constraint.

* :func:`minimize_sum_constrained`: :math:`\min f(x)` s.t. :math:`1^\top x = c`, :math:`l \le x \le u`,
  with the greedy rule of Ramesh et al. (arXiv:2307.01169; the O(n log n) bound-and-sum rule in
  :func:`steepest_l1_direction`), random pairs, and libsvm's maximal-violating-pair and
  second-order rules.
* :class:`SVC`: a binary kernel SVM (linear / RBF, LRU :class:`KernelCache`) on that solver, shaped
  like ``sklearn.svm.SVC``.
* :func:`block_coordinate_descent`: unconstrained block CD with the Gauss-Southwell(-Lipschitz) rules of
  Nutini, Laradji, Schmidt (JMLR 2022, arXiv:1712.08859).
"""

from steepest.coordinate.block import (
    BLOCK_RULES,
    BlockResult,
    BlockRule,
    block_coordinate_descent,
    block_scores,
    make_blocks,
    quadratic_block_lipschitz,
)
from steepest.coordinate.kernels import KernelCache, linear_kernel, rbf_kernel
from steepest.coordinate.objectives import DenseRows, QuadraticObjective, RowProvider, SmoothObjective
from steepest.coordinate.selection import random_pair, second_order_pair, violation
from steepest.coordinate.solver import (
    SELECTIONS,
    ConvergenceWarning,
    Selection,
    SumConstrainedResult,
    minimize_sum_constrained,
)
from steepest.coordinate.subproblem import l1_subproblem_value, steepest_l1_direction
from steepest.coordinate.svm import SVC, libsvm_rho

__all__ = [
    "BLOCK_RULES",
    "SELECTIONS",
    "SVC",
    "BlockResult",
    "BlockRule",
    "ConvergenceWarning",
    "DenseRows",
    "KernelCache",
    "QuadraticObjective",
    "RowProvider",
    "Selection",
    "SmoothObjective",
    "SumConstrainedResult",
    "block_coordinate_descent",
    "block_scores",
    "l1_subproblem_value",
    "libsvm_rho",
    "linear_kernel",
    "make_blocks",
    "minimize_sum_constrained",
    "quadratic_block_lipschitz",
    "random_pair",
    "rbf_kernel",
    "second_order_pair",
    "steepest_l1_direction",
    "violation",
]
