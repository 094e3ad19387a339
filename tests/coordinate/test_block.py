"""Block coordinate descent with GS / GSL rules (Nutini, Laradji, Schmidt 2022) on least squares."""

from __future__ import annotations

import warnings

import pytest
import torch

from steepest.coordinate import (
    BLOCK_RULES,
    ConvergenceWarning,
    QuadraticObjective,
    block_coordinate_descent,
    block_scores,
    make_blocks,
    quadratic_block_lipschitz,
)

DT = torch.float64


def _least_squares(m: int, n: int, seed: int, spread: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A and b of 1/2|Ax - b|^2; columns scaled by 10^U(-spread, spread) make the L_b differ."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=gen, dtype=DT)
    A = A * 10 ** (spread * (2 * torch.rand(n, generator=gen, dtype=DT) - 1))
    return A, torch.randn(m, generator=gen, dtype=DT)


def _objective(A: torch.Tensor, b: torch.Tensor) -> QuadraticObjective:
    return QuadraticObjective(A.T @ A, -(A.T @ b))  # 1/2|Ax - b|^2 up to a constant


@pytest.mark.parametrize("rule", BLOCK_RULES)
def test_least_squares_closed_form(rule: str) -> None:
    A, b = _least_squares(40, 12, 0)
    blocks = [torch.tensor([0, 5, 7]), torch.tensor([1, 2]), torch.arange(8, 12), torch.tensor([3, 4, 6])]
    res = block_coordinate_descent(_objective(A, b), torch.zeros(12, dtype=DT), blocks, rule=rule, tol=1e-10)
    assert res.converged
    torch.testing.assert_close(res.x, torch.linalg.lstsq(A, b.unsqueeze(1)).solution[:, 0], atol=1e-8, rtol=0)


def test_block_lipschitz_is_lambda_max() -> None:
    A, _ = _least_squares(30, 9, 1)
    f = _objective(A, torch.zeros(30, dtype=DT))
    blocks = make_blocks(9, 4)
    lips = quadratic_block_lipschitz(f, blocks)
    for blk, lb in zip(blocks, lips, strict=True):
        assert float(lb) == pytest.approx(float(torch.linalg.matrix_norm(A[:, blk], ord=2) ** 2))


def test_selection_is_the_brute_force_argmax_and_gsl_guarantees_most_progress() -> None:
    A, b = _least_squares(50, 20, 2, spread=1.0)
    f = _objective(A, b)
    blocks = make_blocks(20, 3)
    lips = quadratic_block_lipschitz(f, blocks)
    block_id = torch.cat([torch.full((len(blk),), k) for k, blk in enumerate(blocks)])
    x = torch.randn(20, generator=torch.Generator().manual_seed(0), dtype=DT)
    g = f.gradient(x)
    norms = torch.stack([g[blk].norm() for blk in blocks])
    gs = int(torch.argmax(block_scores(g, block_id, lips, "gs")))
    gsl = int(torch.argmax(block_scores(g, block_id, lips, "gsl")))
    assert gs == int(torch.argmax(norms))
    assert gsl == int(torch.argmax(norms**2 / lips))

    def decrease(k: int) -> float:
        x1 = x.clone()
        x1[blocks[k]] -= g[blocks[k]] / lips[k]
        return float(f.value(x) - f.value(x1))

    bound = 0.5 * norms**2 / lips  # guaranteed progress of the 1/L_b step
    assert decrease(gsl) >= float(bound[gsl]) - 1e-12
    assert decrease(gs) >= float(bound[gs]) - 1e-12
    assert float(bound[gsl]) >= float(bound[gs])
    assert float(bound[gsl]) >= float((0.5 * norms**2).max() / lips.max())  # GS/L_max


def test_gsl_beats_gs_and_random_with_unequal_block_constants() -> None:
    """Singleton blocks with column norms spread over two decades (measured: 408 vs 1191 and 1274)."""
    A, b = _least_squares(100, 30, 3, spread=1.0)
    f = _objective(A, b)
    iters = {}
    for rule in ("gsl", "gs", "random"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = block_coordinate_descent(f, torch.zeros(30, dtype=DT), 1, rule=rule, tol=1e-4, max_iter=20_000)
        iters[rule] = res.n_iter if res.converged else 10**9
    assert 2 * iters["gsl"] < iters["gs"]
    assert 2 * iters["gsl"] < iters["random"]


def test_nonquadratic_needs_lipschitz_and_errors() -> None:
    x0 = torch.zeros(4, dtype=DT)
    fn = lambda x: ((x - 1.0) ** 2).sum() + torch.logsumexp(x, 0)  # noqa: E731
    with pytest.raises(ValueError, match="lipschitz"):
        block_coordinate_descent(fn, x0, 2)
    res = block_coordinate_descent(fn, x0, 2, lipschitz=[3.0, 3.0], tol=1e-8, max_iter=5000)
    assert res.converged
    with pytest.raises(ValueError, match="partition"):
        block_coordinate_descent(fn, x0, [torch.tensor([0, 1]), torch.tensor([1, 2])], lipschitz=[3.0, 3.0])
    with pytest.raises(ValueError, match="rule"):
        block_coordinate_descent(fn, x0, 2, rule="gsq", lipschitz=[3.0, 3.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one positive"):
        block_coordinate_descent(fn, x0, 2, lipschitz=[3.0])
