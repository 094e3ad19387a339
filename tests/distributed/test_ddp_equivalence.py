"""Every registered optimizer under DDP (gloo, 2 and 4 ranks, spawned once per world size).

Each rank trains on its shard of a fixed global batch; the final parameters must be identical on
every rank and equal to a single process trained on the whole batch, up to float reduction order
(float64, rtol 1e-10; Newton-CG 1e-6). Closure optimizers get :func:`steepest.distributed.all_reduce_closure`.

Per :mod:`steepest.distributed`: AdaHessian, Sophia-H and Newton-CG run the unwrapped model with
:func:`~steepest.distributed.data_parallel_curvature` (DDP cannot carry ``create_graph`` gradients);
BlockLLM needs ``find_unused_parameters=True``; ForwardGradient's closure goes through
:func:`~steepest.distributed.all_reduce_closure`, which averages the loss and its forward-mode tangent.
A plain ``DDP`` wrapper around a curvature optimizer's model fails loudly (torch raises), checked too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from steepest.optim._registry import REGISTRY
from tests.distributed import _ddp_workers as workers
from tests.distributed._common import assert_replicas_match, free_port, spawn_ranks

#: Optimizers that raise when run the plain way (``DDP(model)``), with the error they raise.
FAIL_UNDER_PLAIN_DDP = {
    "adahessian": "leaf Variable",
    "sophia_h": "leaf Variable",
    "newton_cg": "leaf Variable",
    "blockllm": "finished reduction",
}
#: Relative tolerance where rounding is amplified: CG on a nearly singular Hessian turns reduction-order
#: differences (1e-16) into ~3e-8 relative differences at 4 ranks (measured); 1e-10 elsewhere.
RTOL = {"newton_cg": 1e-6}
KEYS = sorted(REGISTRY)


@pytest.fixture(scope="module", params=[2, 4], ids=["2ranks", "4ranks"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, list[dict[str, Any]]]:
    size = int(request.param)
    out = tmp_path_factory.mktemp(f"ddp{size}")
    return size, spawn_ranks(workers.run_all, size, out, KEYS, sorted(FAIL_UNDER_PLAIN_DDP))


@pytest.mark.parametrize("key", KEYS)
def test_ddp_matches_single_process(world: tuple[int, list[dict[str, Any]]], key: str) -> None:
    size, ranks = world
    x, y = workers.data(size)
    reference = workers.train(key, workers.make_model(), None, x, y)
    start = list(workers.make_model().parameters())
    assert any(not torch.equal(r, s.detach()) for r, s in zip(reference, start, strict=True)), f"{key} did not move"
    assert_replicas_match(key, [r[key] for r in ranks], reference, RTOL.get(key, 1e-10))


@pytest.mark.parametrize("key", sorted(FAIL_UNDER_PLAIN_DDP))
def test_a_plain_ddp_wrapper_fails_loudly_where_documented(
    world: tuple[int, list[dict[str, Any]]], key: str
) -> None:
    """Run the wrong way (plain ``DDP(model)``), these raise instead of training divergent replicas."""
    _, ranks = world
    for r in ranks:
        result = r[f"plain:{key}"]
        assert isinstance(result, str) and FAIL_UNDER_PLAIN_DDP[key] in result, result


def test_every_registered_optimizer_is_covered() -> None:
    assert set(FAIL_UNDER_PLAIN_DDP) <= set(REGISTRY)
    assert len(KEYS) == len(REGISTRY)


def test_a_dead_rank_stops_the_survivor_with_an_error(tmp_path: Path) -> None:
    """A rank that dies mid-training: the other rank's next all-reduce raises; it never steps alone."""
    mp.spawn(workers.rank_dies, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    survivor = torch.load(tmp_path / "rank0.pt", weights_only=False)
    assert survivor["error"] is not None, survivor
    assert survivor["steps"] == 2, survivor  # no step taken after the peer died
    assert survivor["seconds"] < 60, survivor


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("dcp")
    mp.spawn(workers.run_checkpoints, args=(2, free_port(), str(out), KEYS), nprocs=2, join=True)
    results: dict[str, Any] = torch.load(Path(out) / "ckpt_rank0.pt", weights_only=False)
    return results


@pytest.mark.parametrize("key", KEYS)
def test_distributed_checkpoint_round_trip_continues_bitwise(checkpoints: dict[str, Any], key: str) -> None:
    """Model + optimizer through torch.distributed.checkpoint on 2 ranks resume bitwise.

    ``get_state_dict`` / ``set_state_dict`` with ``dcp.save`` / ``dcp.load``; the fresh optimizer calls
    ``init_state()`` before ``get_state_dict`` (which would otherwise call ``step()`` without a closure).
    """
    assert checkpoints[key] is None, f"{key}: {checkpoints[key]}"
