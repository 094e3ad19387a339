"""Kunstner et al. 2024: tuned gradient descent barely lowers the rare classes' loss; Adam and sign descent do.

On Zipf-distributed classes every frequency group's loss goes down under Adam and sign descent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from steepest.bench.workloads.zipf_softmax import N_GROUPS
from steepest.repro.heavy_tailed import METHODS, MethodResult, format_table, heavy_tailed

# Measured (python -m steepest.repro.heavy_tailed, tiny, 100 steps, seed 0): tuned lrs gd 0.1, adam 3e-2,
# sign 1e-3; rarest-group loss ratio (final / initial) gd 1.07, adam 0.0001, sign 0.008; most frequent group
# gd 0.64, adam 0.08, sign 0.25. The thresholds below leave wide margins around these figures. (The claim is for
# this 100-step budget; see the module docstring for longer budgets.)
RARE = N_GROUPS - 1


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, MethodResult]]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield heavy_tailed("tiny", steps=100, seed=0)
    finally:
        torch.set_num_threads(before)


def test_gradient_descent_is_slow_on_the_rarest_classes(results: dict[str, MethodResult]) -> None:
    gd, adam, sign = results["gd"], results["adam"], results["sign"]
    assert gd.ratio(RARE) > 0.5, format_table(results)  # GD keeps most of the rare classes' initial loss
    assert adam.ratio(RARE) < 0.1 and sign.ratio(RARE) < 0.1, format_table(results)
    assert gd.ratio(RARE) > 5 * max(adam.ratio(RARE), sign.ratio(RARE)), format_table(results)


def test_frequent_classes_improve_for_every_method(results: dict[str, MethodResult]) -> None:
    for method, r in results.items():
        assert r.ratio(0) < 0.8, f"{method}: most frequent group {format_table(results)}"


def test_step_sizes_are_tuned_inside_the_grid(results: dict[str, MethodResult]) -> None:
    # Every method gets a fair step size: its best lr is strictly inside its grid (so neither a larger nor a
    # smaller one would obviously help), and it is the grid's lowest final loss.
    for method, r in results.items():
        grid = METHODS[method][2]
        assert min(grid) < r.lr < max(grid), f"{method}: tuned lr {r.lr} at the edge of {grid}"
        assert r.final_loss[r.lr] == min(r.final_loss.values()), method
    assert results["adam"].final_loss[results["adam"].lr] < results["gd"].final_loss[results["gd"].lr]
