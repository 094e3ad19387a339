"""Stochastic Lanczos quadrature against the exact density of a known spectrum."""

from __future__ import annotations

import math

import pytest
import torch

from steepest.diagnostics import MatrixOperator, js_distance, stochastic_lanczos_quadrature
from tests.diagnostics._problems import matrix_with_spectrum

Z = 4.0
SPECTRUM = torch.cat([torch.linspace(-1.0, 1.0, 30), torch.tensor([3.0, 3.5, 8.0])]).double()


def _exact_density(grid: torch.Tensor, eig: torch.Tensor, variance: float) -> torch.Tensor:
    diff = grid.unsqueeze(0) - eig.unsqueeze(1)
    return (torch.exp(-(diff**2) / (2 * variance)) / math.sqrt(2 * math.pi * variance)).mean(dim=0)


def test_diagonal_matrix_with_rademacher_probes_is_exact() -> None:
    # For a diagonal matrix every Rademacher probe weighs each eigenvalue 1/n: SLQ with m = n is exact.
    op = MatrixOperator(torch.diag(SPECTRUM))
    quad = stochastic_lanczos_quadrature(op, 2, op.dim)
    grid = torch.linspace(-2.0, 9.0, 500, dtype=torch.float64)
    _, density = quad.density(grid, variance=0.05, normalize=False)
    torch.testing.assert_close(density, _exact_density(grid, SPECTRUM, 0.05), rtol=1e-7, atol=1e-9)


def test_moments_and_cdf_match_a_rotated_known_spectrum() -> None:
    op = MatrixOperator(matrix_with_spectrum(SPECTRUM, seed=1))
    num_probes = 300
    quad = stochastic_lanczos_quadrature(op, num_probes, op.dim, seed=2)
    assert torch.allclose(quad.weights.sum(dim=1), torch.ones(num_probes, dtype=torch.float64))
    for k in range(1, 5):
        samples = quad.moment_samples(k)
        stderr = float(samples.std() / num_probes**0.5)
        exact = float(SPECTRUM.pow(k).mean())
        assert abs(quad.moment(k) - exact) < Z * stderr, k
        assert Z * stderr < 0.35 * abs(exact)  # the bound is informative (measured 0.19-0.29)
    # CDF at grid points: each probe's CDF is an unbiased estimate of the empirical spectral CDF
    grid = torch.linspace(-1.5, 8.5, 41, dtype=torch.float64)
    exact_cdf = (SPECTRUM.unsqueeze(1) <= grid).double().mean(dim=0)
    below = (quad.nodes.unsqueeze(-1) <= grid + 1e-9).double()
    per_probe = (quad.weights.unsqueeze(-1) * below).sum(dim=1)
    bound = Z * per_probe.std(dim=0) / num_probes**0.5 + 1e-9
    assert bool(((quad.cdf(grid + 1e-9) - exact_cdf).abs() <= bound).all())
    assert float((quad.cdf(grid + 1e-9) - exact_cdf).abs().max()) < 0.05


def test_gauss_quadrature_is_exact_to_degree_2m_minus_1() -> None:
    matrix = matrix_with_spectrum(SPECTRUM, seed=3)
    op = MatrixOperator(matrix)
    probe_gen = torch.Generator().manual_seed(9)
    m = 4
    quad = stochastic_lanczos_quadrature(op, 1, m, generator=probe_gen)
    v = torch.randint(0, 2, (op.dim,), generator=torch.Generator().manual_seed(9)).double() * 2 - 1
    v = v / v.norm()
    for k in range(2 * m):
        exact = float(v @ torch.linalg.matrix_power(matrix, k) @ v)
        assert quad.moment(k) == pytest.approx(exact, rel=1e-8, abs=1e-8), k
    exact_8 = float(v @ torch.linalg.matrix_power(matrix, 2 * m) @ v)
    assert abs(quad.moment(2 * m) - exact_8) > 1e-6 * exact_8  # and not beyond


def test_default_density_is_normalized_on_pyhessian_grid() -> None:
    op = MatrixOperator(matrix_with_spectrum(SPECTRUM, seed=1))
    quad = stochastic_lanczos_quadrature(op, 3, 20)
    grid, density = quad.density()
    assert grid.numel() == 10000
    assert float(grid[0]) == pytest.approx(float(quad.nodes.min(dim=1).values.mean()) - 0.01)
    assert float(density.sum() * (grid[1] - grid[0])) == pytest.approx(1.0)


def test_js_distance() -> None:
    p = torch.tensor([0.5, 0.5, 0.0])
    assert js_distance(p, p) == 0.0
    assert js_distance(p, torch.tensor([0.0, 0.0, 1.0])) == pytest.approx(1.0)
    # symmetric, and a hand value: p=(1,0), q=(1/2,1/2) -> JS divergence 0.3113 bits
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
    assert js_distance(a, b) == pytest.approx(js_distance(b, a))
    expected = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert js_distance(a, b) == pytest.approx(math.sqrt(expected))
    with pytest.raises(ValueError, match="share a grid"):
        js_distance(a, p)
    with pytest.raises(ValueError, match="zero"):
        js_distance(torch.zeros(2), a)


def test_errors() -> None:
    op = MatrixOperator(torch.eye(3))
    with pytest.raises(ValueError, match="num_probes"):
        stochastic_lanczos_quadrature(op, 0)
    with pytest.raises(ValueError, match="num_steps"):
        stochastic_lanczos_quadrature(op, 1, 0)
    with pytest.raises(ValueError, match="variance"):
        stochastic_lanczos_quadrature(op, 1, 2).density(variance=0.0)
