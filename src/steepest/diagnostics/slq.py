r"""Spectral density of a Hessian (block) by stochastic Lanczos quadrature (SLQ).

Papers: Ghorbani, Krishnan, Xiao, "An Investigation into Neural Net Optimization via Hessian
Eigenvalue Density", ICML 2019, arXiv:1901.10159; Yao et al., "PyHessian", 2020, arXiv:1912.07145;
Lin, Saad, Yang, "Approximating spectral densities of large matrices", SIAM Review 2016.

For a unit probe :math:`v`, ``m`` Lanczos steps give :math:`T_m = Y \Theta Y^\top`; the nodes
:math:`\theta_i` with weights :math:`\tau_i = (e_1^\top y_i)^2` form the Gauss quadrature rule of the
measure :math:`\mu_v = \sum_j (v^\top u_j)^2 \delta_{\lambda_j}`, exact for polynomials of degree
:math:`\le 2m-1`. With Rademacher probes, :math:`\mathbb E[\mu_v]` is the empirical spectral
distribution :math:`\phi = \frac1n \sum_j \delta_{\lambda_j}`. The density is smoothed with a Gaussian
kernel of variance :math:`\sigma^2`:

.. math:: \phi_\sigma(t) = \frac{1}{n_v} \sum_{l=1}^{n_v} \sum_{i=1}^{m} \tau_i^{(l)} g_\sigma(t - \theta_i^{(l)}).

Defaults as PyHessian's ``density`` and ``density_generate``: ``num_steps=100``, ``num_probes=1``,
10000 grid points spanning the mean extreme nodes ± ``overhead=0.01``, kernel variance
``1e-5 · max(1, λ_max - λ_min)``, the density normalized to integrate to 1 on the grid.

Differences from PyHessian: none in the math; the moments :math:`\frac1n\operatorname{tr}H^k` and
the Jensen-Shannon distance between block densities are added (the latter as "Why Transformers
Need Adam: A Hessian Perspective", Zhang et al. 2024, arXiv:2402.16788, use it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from steepest.diagnostics.hutchinson import rademacher
from steepest.diagnostics.hvp import LinearOperator
from steepest.diagnostics.lanczos import lanczos


@dataclass(frozen=True)
class SpectralQuadrature:
    """Gauss quadrature nodes and weights from SLQ, one row per probe.

    Attributes:
        nodes: ``num_probes x m`` Ritz values (float64); rows that stopped early are padded with
            their last node and zero weight.
        weights: ``num_probes x m`` weights, each row summing to 1.
        dim: dimension of the operator.
    """

    nodes: Tensor
    weights: Tensor
    dim: int

    def moment(self, k: int) -> float:
        r"""Estimate of :math:`\frac1n \operatorname{tr} H^k` (exact per probe for :math:`k \le 2m-1`)."""
        return float((self.weights * self.nodes.pow(k)).sum(dim=1).mean())

    def moment_samples(self, k: int) -> Tensor:
        r"""Per-probe estimates :math:`v^\top H^k v / \|v\|^2` (their spread gives a standard error)."""
        return (self.weights * self.nodes.pow(k)).sum(dim=1)

    def cdf(self, t: Tensor) -> Tensor:
        """The (unsmoothed) quadrature's cumulative distribution at points ``t``."""
        t = t.to(torch.float64)
        below = (self.nodes.unsqueeze(-1) <= t).to(torch.float64)
        return (self.weights.unsqueeze(-1) * below).sum(dim=1).mean(dim=0)

    def density(
        self,
        grid: Tensor | None = None,
        *,
        num_points: int = 10000,
        variance: float | None = None,
        overhead: float = 0.01,
        normalize: bool = True,
    ) -> tuple[Tensor, Tensor]:
        r"""The Gaussian-broadened density on a grid: returns ``(grid, density)`` (float64).

        Args:
            grid: evaluation points; default ``num_points`` equispaced points from the mean (over
                probes) smallest node minus ``overhead`` to the mean largest node plus ``overhead``.
            num_points: grid size when ``grid`` is None (PyHessian: 10000).
            variance: kernel variance :math:`\sigma^2`; default ``1e-5 · max(1, λ_max − λ_min)``.
            overhead: grid padding (PyHessian: 0.01).
            normalize: rescale so the density sums to 1 times the grid step (PyHessian does; needs
                an equispaced grid). With ``False`` it is the raw mixture of unit-mass Gaussians.
        """
        lo = float(self.nodes.min(dim=1).values.mean()) - overhead
        hi = float(self.nodes.max(dim=1).values.mean()) + overhead
        if grid is None:
            grid = torch.linspace(lo, hi, num_points, dtype=torch.float64)
        grid = grid.to(torch.float64)
        var = 1e-5 * max(1.0, hi - lo) if variance is None else variance
        if var <= 0:
            raise ValueError(f"variance must be positive, got {var}")
        diff = grid.view(1, 1, -1) - self.nodes.unsqueeze(-1)
        kernel = torch.exp(-(diff**2) / (2 * var)) / math.sqrt(2 * math.pi * var)
        density = (self.weights.unsqueeze(-1) * kernel).sum(dim=1).mean(dim=0)
        if normalize and grid.numel() > 1:
            step = float(grid[1] - grid[0])
            total = float(density.sum()) * step
            if total > 0:
                density = density / total
        return grid, density


def stochastic_lanczos_quadrature(
    op: LinearOperator,
    num_probes: int = 1,
    num_steps: int = 100,
    *,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> SpectralQuadrature:
    """Run SLQ: ``num_probes`` Lanczos runs of ``num_steps`` steps from normalized Rademacher probes.

    Args:
        op: the operator (whole model or one block).
        num_probes: number of probe vectors :math:`n_v` (PyHessian default 1).
        num_steps: Lanczos steps per probe (PyHessian default 100; capped at ``op.dim``).
        generator: CPU generator for the probes; default a fresh one seeded with ``seed``.
        seed: seed used when ``generator`` is None.

    Raises:
        ValueError: ``num_probes < 1`` or ``num_steps < 1``.

    Example:
        >>> from steepest.diagnostics import MatrixOperator
        >>> quad = stochastic_lanczos_quadrature(MatrixOperator(torch.diag(torch.tensor([1.0, 3.0]))), 2, 2)
        >>> round(quad.moment(1), 4), round(quad.moment(2), 4)  # tr(H)/n, tr(H^2)/n
        (2.0, 5.0)
    """
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    m = min(num_steps, op.dim)
    nodes = torch.zeros(num_probes, m, dtype=torch.float64)
    weights = torch.zeros(num_probes, m, dtype=torch.float64)
    for i in range(num_probes):
        probe = rademacher(op.dim, generator=gen, dtype=op.dtype, device=op.device)
        values, vectors = lanczos(op, m, start=probe).ritz()
        steps = values.numel()
        nodes[i, :steps] = values
        nodes[i, steps:] = values[-1]
        weights[i, :steps] = vectors[0] ** 2
    return SpectralQuadrature(nodes=nodes, weights=weights, dim=op.dim)


def js_distance(p: Tensor, q: Tensor) -> float:
    r"""Jensen-Shannon distance (base 2, in [0, 1]) between two densities on the same grid.

    The densities are renormalized to probability vectors over the grid points; the distance is
    :math:`\sqrt{\tfrac12 KL(p\|m) + \tfrac12 KL(q\|m)}`, :math:`m = (p+q)/2`.

    Raises:
        ValueError: different shapes, negative entries, or an all-zero density.

    Example:
        >>> js_distance(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
        1.0
    """
    if p.shape != q.shape:
        raise ValueError(f"densities must share a grid, got shapes {tuple(p.shape)} and {tuple(q.shape)}")
    p, q = p.to(torch.float64).clamp_min(0), q.to(torch.float64).clamp_min(0)
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("a density is zero everywhere")
    p, q = p / p.sum(), q / q.sum()
    both = p + q  # log2(a / ((p+q)/2)) written so that (p+q)/2 cannot underflow to 0 for a tiny a > 0

    def kl(a: Tensor) -> Tensor:
        mask = a > 0
        return (a[mask] * (torch.log2(a[mask]) + 1.0 - torch.log2(both[mask]))).sum()

    return math.sqrt(min(1.0, max(0.0, float(0.5 * kl(p) + 0.5 * kl(q)))))
