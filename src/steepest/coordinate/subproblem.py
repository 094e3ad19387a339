r"""Steepest descent in the 1-norm under a sum constraint and bounds: the O(n log n) rule.

Paper: Ramesh, Mishkin, Schmidt, Zhou, Lavington, She, "Analyzing and Improving Greedy 2-Coordinate
Updates for Equality-Constrained Optimization via Steepest Descent in the 1-Norm", 2023,
arXiv:2307.01169.

The subproblem, with gradient g at a feasible x and 1-norm Lipschitz constant :math:`L_1`:

.. math::

    \min_d\; g^\top d + \tfrac{L_1}{2}\|d\|_1^2 \quad\text{s.t.}\quad 1^\top d = 0,\;
    l - x \le d \le u - x.

With :math:`1^\top d = 0`, :math:`\|d\|_1 = 2\Delta` where :math:`\Delta` is the mass moved. For a
fixed :math:`\Delta` the best linear term moves mass from the largest gradients (coordinates that
can decrease, list D, sorted by g descending) to the smallest (coordinates that can increase, list U,
sorted by g ascending), each coordinate filling to its bound before the head of its list advances.
On each segment between fill points the gap :math:`g_D - g_U` is constant, and the objective
:math:`-\int_0^\Delta \mathrm{gap} + 2L_1\Delta^2` is convex in :math:`\Delta`; its minimiser is
inside the first segment where :math:`\Delta` reaches :math:`\mathrm{gap}/(4L_1)`, or where the gap
becomes non-positive, or where a list runs out. Without active bounds the answer is 2-sparse: the
greedy pair :math:`i = \arg\max g`, :math:`j = \arg\min g` with :math:`\delta = (g_i - g_j)/(4L_1)`.

The walk is vectorised: a sort of the candidate gradients (those that beat the other list's head),
cumulative capacities of both lists, the merged breakpoints (a sort of the truncated capacity lists)
and ``searchsorted`` to find the heads on every segment. When the two heads can absorb the whole
move :math:`\mathrm{gap}/(4L_1)` the answer is that pair and nothing is sorted.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _exclusive_cumsum(v: Tensor) -> Tensor:
    # cumsum shifted by one; avoids inf - inf when a capacity is infinite
    out = torch.zeros_like(v)
    if v.numel() > 1:
        out[1:] = torch.cumsum(v[:-1], 0)
    return out


def _sorted_prefix(idx: Tensor, key: Tensor, room: Tensor, mass: float, k: int = 64) -> Tensor:
    """``idx`` sorted by ``key`` ascending, cut after the prefix whose rooms first reach ``mass``.

    Tries the ``k`` smallest keys first (a partial sort); sorts everything only when they hold
    too little room.
    """
    if idx.numel() > k:
        top = idx[torch.topk(key[idx], k, largest=False, sorted=True).indices]
        if float(room[top].sum()) >= mass:
            return top
    return idx[torch.argsort(key[idx], stable=True)]


def steepest_l1_direction(
    grad: Tensor,
    x: Tensor,
    lower: Tensor,
    upper: Tensor,
    lipschitz: float,
    heads: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Solve the bound-and-sum-constrained 1-norm steepest-descent subproblem.

    Args:
        grad: gradient g at x, shape ``(n,)``.
        x: feasible point, ``lower <= x <= upper``.
        lower: lower bounds (``-inf`` allowed).
        upper: upper bounds (``+inf`` allowed).
        lipschitz: :math:`L_1 > 0`, the 1-norm Lipschitz constant of the gradient (or any positive
            scale; it sets how much mass the direction moves).
        heads: ``(argmax_D g, argmin_U g)`` if the caller already has them (saves two reductions).

    Returns:
        ``(idx, values)``: the coordinates that move and their (nonzero) changes; ``values`` sums to
        zero and keeps ``x + d`` inside the bounds. Empty when x is optimal for the subproblem.

    Example:
        >>> import torch
        >>> g = torch.tensor([3.0, 0.0, -1.0])
        >>> inf = torch.full((3,), float("inf"))
        >>> steepest_l1_direction(g, torch.zeros(3), -inf, inf, 1.0)
        (tensor([0, 2]), tensor([-1.,  1.]))
    """
    if lipschitz <= 0:
        raise ValueError(f"lipschitz must be positive, got {lipschitz}")
    empty = (grad.new_zeros(0, dtype=torch.long), grad.new_zeros(0))
    if heads is None:
        inf = torch.tensor(float("inf"), dtype=grad.dtype)
        i = int(torch.argmax(torch.where(x > lower, grad, -inf)))
        j = int(torch.argmin(torch.where(x < upper, grad, inf)))
        if not (bool(x[i] > lower[i]) and bool(x[j] < upper[j])):
            return empty
    else:
        i, j = heads
    g_i, g_j = float(grad[i]), float(grad[j])
    gap0 = g_i - g_j
    if gap0 <= 0:
        return empty
    # The mass never exceeds gap0 / (4 L1): the first segment's target.
    delta_max = gap0 / (4.0 * lipschitz)
    if float(x[i] - lower[i]) >= delta_max and float(upper[j] - x[j]) >= delta_max:
        # Fast path: the two heads absorb the whole move (always the case without bounds).
        return torch.tensor([i, j]), torch.tensor([-delta_max, delta_max], dtype=grad.dtype)
    room_down = x - lower
    room_up = upper - x
    # Only coordinates that beat the other list's head can move.
    d_idx = _sorted_prefix(torch.nonzero((room_down > 0) & (grad > g_j)).flatten(), -grad, room_down, delta_max)
    u_idx = _sorted_prefix(torch.nonzero((room_up > 0) & (grad < g_i)).flatten(), grad, room_up, delta_max)
    g_d, g_u = grad[d_idx], grad[u_idx]
    cap_d, cap_u = room_down[d_idx], room_up[u_idx]
    start_d, start_u = _exclusive_cumsum(cap_d), _exclusive_cumsum(cap_u)
    keep_d = int((start_d < delta_max).sum())
    keep_u = int((start_u < delta_max).sum())
    d_idx, g_d, cap_d, start_d = d_idx[:keep_d], g_d[:keep_d], cap_d[:keep_d], start_d[:keep_d]
    u_idx, g_u, cap_u, start_u = u_idx[:keep_u], g_u[:keep_u], cap_u[:keep_u], start_u[:keep_u]
    end_d, end_u = start_d + cap_d, start_u + cap_u

    breaks = torch.sort(torch.cat([grad.new_zeros(1), end_d, end_u])).values
    seg_lo, seg_hi = breaks[:-1], breaks[1:]
    head_d = torch.searchsorted(end_d, seg_lo, right=True)
    head_u = torch.searchsorted(end_u, seg_lo, right=True)
    valid = (head_d < keep_d) & (head_u < keep_u)
    gap = g_d[head_d.clamp(max=keep_d - 1)] - g_u[head_u.clamp(max=keep_u - 1)]
    target = gap / (4.0 * lipschitz)
    blocked = ~valid | (gap <= 0)
    stop = blocked | (target <= seg_hi)
    if bool(stop.any()):
        k = int(torch.argmax(stop.to(torch.int8)))
        mass = seg_lo[k] if bool(blocked[k]) else torch.maximum(target[k], seg_lo[k])
    else:  # both lists run out at the same point
        mass = seg_hi[-1]
    move_d = torch.minimum(torch.clamp(mass - start_d, min=0.0), cap_d)
    move_u = torch.minimum(torch.clamp(mass - start_u, min=0.0), cap_u)
    idx = torch.cat([d_idx, u_idx])
    values = torch.cat([-move_d, move_u])
    nz = values != 0
    return idx[nz], values[nz]


def l1_subproblem_value(grad: Tensor, values: Tensor, idx: Tensor, lipschitz: float) -> float:
    r""":math:`g^\top d + \tfrac{L_1}{2}\|d\|_1^2` for a sparse direction ``d[idx] = values``."""
    return float(torch.dot(grad[idx], values) + 0.5 * lipschitz * values.abs().sum() ** 2)
