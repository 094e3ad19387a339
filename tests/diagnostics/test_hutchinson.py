"""Hutchinson probes and estimators: Rademacher statistics, unbiasedness within a CLT bound."""

from __future__ import annotations

import pytest
import torch

from steepest.diagnostics import (
    HessianOperator,
    MatrixOperator,
    hutchinson_diagonal,
    hutchinson_trace,
    rademacher,
)
from tests.diagnostics._problems import exact_hessian, matrix_with_spectrum, tiny_mlp

Z = 4.0  # two-sided normal quantile: a correct estimator fails a check with probability ~6e-5


def test_rademacher_probes_have_mean_zero_and_both_signs() -> None:
    n = 20000
    z = rademacher(n, generator=torch.Generator().manual_seed(0))
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(z.mean())) < Z / n**0.5  # the mean of n fair ±1 has standard deviation 1/sqrt(n)
    # independent coordinates: the lag-1 correlation is also ~0
    assert abs(float((z[1:] * z[:-1]).mean())) < Z / (n - 1) ** 0.5
    # the same seed gives the same probes, another seed other probes
    assert torch.equal(z, rademacher(n, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(z, rademacher(n, generator=torch.Generator().manual_seed(1)))


def test_trace_is_unbiased_within_a_clt_bound() -> None:
    eig = torch.linspace(-2.0, 6.0, 60, dtype=torch.float64)
    matrix = matrix_with_spectrum(eig, seed=2)
    op = MatrixOperator(matrix)
    exact = float(eig.sum())
    est = hutchinson_trace(op, 400, seed=3)
    assert est.samples.shape == (400,)
    assert abs(est.trace - exact) < Z * est.stderr
    # the bound is informative: a 10% bias would be caught
    assert Z * est.stderr < 0.1 * abs(exact)
    # the variance of z^T A z for Rademacher z is 2 * sum_{i != j} A_ij^2: the stderr is consistent with it
    true_sd = float(2 * (matrix.pow(2).sum() - matrix.diagonal().pow(2).sum())) ** 0.5
    assert 0.8 < est.stderr * 400**0.5 / true_sd < 1.2


def test_trace_of_a_model_hessian_block() -> None:
    model, loss_fn, batch = tiny_mlp(seed=2)
    for names in (None, ["0.weight"]):
        op = HessianOperator(model, loss_fn, batch, names)
        exact = float(exact_hessian(model, loss_fn, batch, names).trace())
        est = hutchinson_trace(op, 300, generator=torch.Generator().manual_seed(5))
        assert abs(est.trace - exact) < Z * est.stderr


def test_diagonal_is_unbiased_within_a_clt_bound() -> None:
    model, loss_fn, batch = tiny_mlp(seed=4)
    op = HessianOperator(model, loss_fn, batch)
    exact = exact_hessian(model, loss_fn, batch).diagonal()
    est = hutchinson_diagonal(op, 300, seed=6)
    assert est.per_parameter is not None and list(est.per_parameter) == op.names
    off = (est.diagonal - exact).abs()
    nonzero = est.stderr > 0
    # coordinates with no off-diagonal coupling are exact (zero variance); the others within the bound
    assert bool((off[~nonzero] < 1e-12).all())
    assert bool((off[nonzero] < 4.5 * est.stderr[nonzero]).all())  # 26 coordinates: 4.5 sigma each


def test_one_probe_and_errors() -> None:
    op = MatrixOperator(torch.diag(torch.tensor([1.0, 2.0])))
    assert hutchinson_trace(op, 1).trace == 3.0
    assert torch.isnan(hutchinson_diagonal(op, 1).stderr).all()
    with pytest.raises(ValueError, match="num_probes"):
        hutchinson_trace(op, 0)
    with pytest.raises(ValueError, match="num_probes"):
        hutchinson_diagonal(op, 0)
