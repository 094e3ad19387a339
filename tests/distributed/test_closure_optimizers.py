"""Line-search, Polyak and zeroth-order optimizers under DDP on 2 gloo ranks (spawned once).

With :func:`steepest.distributed.all_reduce_closure` every rank sees the global-batch loss, so every
rank accepts the same steps and draws the same perturbations: the replicas stay bitwise identical and
follow the single-process run on the global batch (to float reduction order: rtol 1e-9 in float64).
Without it (the control) the replicas diverge.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from steepest.distributed import all_reduce_closure
from tests.distributed import _closure_workers as workers
from tests.distributed._common import spawn_ranks

WORLD = 2


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return spawn_ranks(workers.run_all, WORLD, tmp_path_factory.mktemp("closures"))


@pytest.mark.parametrize("key", workers.KEYS)
def test_ranks_agree_and_match_single_process(results: list[dict[str, Any]], key: str) -> None:
    ranks = [r["wrapped"][key] for r in results]
    for p0, p1 in zip(*ranks, strict=True):
        assert torch.equal(p0, p1), f"{key}: replicas differ"
    x, y = workers.data(WORLD)
    reference = workers.train(key, workers.make_model(), x, y, wrap=False)
    start = list(workers.make_model().parameters())
    moved = False
    for p, ref, p_start in zip(ranks[0], reference, start, strict=True):
        torch.testing.assert_close(p, ref, rtol=1e-9, atol=1e-12)
        moved = moved or not torch.equal(ref, p_start.detach())
    assert moved, f"{key}: the reference run did not move; the comparison would be vacuous"


@pytest.mark.parametrize("key", workers.UNWRAPPED_KEYS)
def test_local_losses_make_replicas_diverge(results: list[dict[str, Any]], key: str) -> None:
    """The control: the same runs with each rank's own loss do not stay in sync."""
    ranks = [r["unwrapped"][key] for r in results]
    assert any(not torch.equal(p0, p1) for p0, p1 in zip(*ranks, strict=True))


def test_wrapper_is_identity_without_a_process_group() -> None:
    def closure() -> torch.Tensor:
        return torch.tensor(1.0)

    assert all_reduce_closure(closure) is closure
