"""Lanczos top-k eigenvalues against torch.linalg.eigvalsh, whole model and per block."""

from __future__ import annotations

import pytest
import torch

from steepest.diagnostics import HessianOperator, MatrixOperator, lanczos, parameter_blocks, top_eigenvalues
from tests.diagnostics._problems import exact_hessian, matrix_with_spectrum, tiny_mlp


def _distinct(values: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
    keep = [values[0]]
    for v in values[1:]:
        if v - keep[-1] > tol * max(1.0, float(values.abs().max())):
            keep.append(v)
    return torch.stack(keep)


@pytest.mark.parametrize("method", ["autograd", "func"])
def test_top_k_matches_eigvalsh_whole_model_and_blocks(method: str) -> None:
    model, loss_fn, batch = tiny_mlp(seed=1)
    full = HessianOperator(model, loss_fn, batch, method=method)  # type: ignore[arg-type]
    blocks = {"model": list(dict(model.named_parameters())), **parameter_blocks(model)}
    for names in blocks.values():
        op = full.block(names)
        # Lanczos from one start vector sees each distinct eigenvalue once (2.weight: every eigenvalue
        # twice, as the Hessian of a linear layer under a mean squared error is a Kronecker product with I_2)
        exact = _distinct(torch.linalg.eigvalsh(exact_hessian(model, loss_fn, batch, names)))
        k = min(3, exact.numel())
        top = top_eigenvalues(op, k, num_steps=op.dim)
        torch.testing.assert_close(top.eigenvalues, exact.flip(0)[:k], rtol=1e-8, atol=1e-10)
        bottom = top_eigenvalues(op, 1, which="smallest", num_steps=op.dim)
        torch.testing.assert_close(bottom.eigenvalues, exact[:1], rtol=1e-8, atol=1e-10)
        mag = top_eigenvalues(op, 1, which="magnitude", num_steps=op.dim).eigenvalues
        torch.testing.assert_close(mag, exact[exact.abs().argmax()].reshape(1), rtol=1e-8, atol=1e-10)


def test_few_steps_converge_to_the_top_of_a_known_spectrum() -> None:
    eig = torch.cat([torch.tensor([10.0, 7.0, 5.0]), torch.linspace(-1.0, 1.0, 197)]).double()
    op = MatrixOperator(matrix_with_spectrum(eig))
    res = top_eigenvalues(op, 3, num_steps=40, return_eigenvectors=True)
    torch.testing.assert_close(res.eigenvalues, torch.tensor([10.0, 7.0, 5.0], dtype=torch.float64), rtol=1e-9, atol=0)
    assert res.num_steps == 40 and bool((res.residuals < 1e-6).all())
    assert res.eigenvectors is not None
    for value, vec in zip(res.eigenvalues, res.eigenvectors, strict=True):
        torch.testing.assert_close(op.matrix @ vec, value * vec, rtol=0, atol=1e-6)


def test_reorthogonalization_removes_ghost_eigenvalues() -> None:
    # Without reorthogonalization, converged Ritz values reappear as spurious copies.
    eig = torch.cat([torch.tensor([100.0]), torch.linspace(0.0, 1.0, 299)]).double()
    op = MatrixOperator(matrix_with_spectrum(eig, seed=4))
    with_re = lanczos(op, 120).ritz()[0]
    without = lanczos(op, 120, reorthogonalize=False).ritz()[0]
    assert int((with_re > 99.0).sum()) == 1
    assert int((without > 99.0).sum()) > 1


def test_invariant_subspace_stops_early_and_is_exact() -> None:
    op = MatrixOperator(torch.diag(torch.tensor([2.0, 2.0, 2.0, 5.0, 5.0], dtype=torch.float64)))
    run = lanczos(op, 5, start=torch.ones(5, dtype=torch.float64))
    assert run.alpha.numel() == 2 and run.last_beta == 0.0
    torch.testing.assert_close(run.ritz()[0], torch.tensor([2.0, 5.0], dtype=torch.float64))


def test_errors() -> None:
    op = MatrixOperator(torch.eye(3))
    with pytest.raises(ValueError, match="k must be"):
        top_eigenvalues(op, 4)
    with pytest.raises(ValueError, match="which"):
        top_eigenvalues(op, 1, which="biggest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_steps"):
        lanczos(op, 0)
    with pytest.raises(ValueError, match="zero"):
        lanczos(op, 2, start=torch.zeros(3))
    with pytest.raises(ValueError, match="square"):
        MatrixOperator(torch.ones(2, 3))
