r"""Working-set rules for :math:`\min f(x)` s.t. :math:`1^\top x = c`, :math:`l \le x \le u`.

Every rule returns a *pair* ``(i, j)``: mass leaves coordinate ``i`` and enters ``j`` along
:math:`e_j - e_i`. The 1-norm steepest-descent rule of the paper (``"greedy"``) may move more than two
coordinates under bounds; it lives in :mod:`steepest.coordinate.subproblem`.

Sets, as in libsvm (Fan, Chen, Lin, "Working Set Selection Using Second Order Information for
Training Support Vector Machines", JMLR 6, 2005) after the change of variables
:math:`z = y \odot \alpha` that turns the SVM dual into a sum constraint: D = {t : x_t > l_t} (can
decrease, libsvm's :math:`I_{low}`) and U = {t : x_t < u_t} (can increase, libsvm's :math:`I_{up}`).
All rules are vectorised: masked ``argmax``/``argmin`` over n, no Python loop over coordinates.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: libsvm's floor on the pair curvature (``TAU``).
TAU = 1e-12


def movable(x: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Masks of the coordinates that can decrease (D) and increase (U)."""
    return x > lower, x < upper


def violation(grad: Tensor, down: Tensor, up: Tensor) -> tuple[float, int, int]:
    r"""The maximal KKT violation :math:`\max_D g - \min_U g` and the maximal violating pair.

    Returns ``(violation, i, j)`` with ``i = argmax_D g`` and ``j = argmin_U g`` (``-inf`` and
    ``-1`` indices when a set is empty). x is optimal for a convex f when the violation is <= 0.
    """
    top, i = grad.masked_fill(~down, -math.inf).max(0)
    bottom, j = grad.masked_fill(~up, math.inf).min(0)
    hi, lo = float(top), float(bottom)
    if hi == -math.inf or lo == math.inf:
        return -math.inf, -1, -1
    return hi - lo, int(i), int(j)


def second_order_pair(grad: Tensor, down: Tensor, j: int, q_row_j: Tensor, q_diag: Tensor) -> int:
    r"""The second-order rule of libsvm (WSS 2): the partner ``i`` of the maximal-violating ``j``.

    With :math:`j = \arg\min_U g`, choose :math:`i = \arg\min_{t \in D,\, g_t > g_j} -b_t^2 / a_t`,
    :math:`b_t = g_t - g_j`, :math:`a_t = Q_{tt} + Q_{jj} - 2Q_{tj}` (:math:`a_t \le 0 \to` TAU).
    The bounds are ignored when choosing (the step is clipped afterwards), as in libsvm.
    Returns -1 when no t qualifies.
    """
    b = grad - grad[j]
    eligible = down & (b > 0)
    if not bool(eligible.any()):
        return -1
    a = q_diag + q_diag[j] - 2.0 * q_row_j
    a = torch.where(a > 0, a, torch.full_like(a, TAU))
    score = torch.where(eligible, b * b / a, torch.full_like(a, -1.0))
    return int(torch.argmax(score))


def random_pair(n: int, generator: torch.Generator) -> tuple[int, int]:
    """Two distinct coordinates drawn uniformly at random."""
    i = int(torch.randint(n, (1,), generator=generator))
    j = int(torch.randint(n - 1, (1,), generator=generator))
    return i, j + (j >= i)
