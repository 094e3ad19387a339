"""Every registered optimizer under FSDP2 (``fully_shard``, DTensor parameters; gloo, 2 ranks, and 4 in the slow tier).

GaLore, Fira and FRUGAL refuse only projected groups; their unprojected defaults run as ``key/dense``.
Each Linear and the root are sharded on dim 0 (4 ranks shard the 2-row output layer unevenly). An
optimizer either trains to the parameters of a single process on the global batch (float64, rtol
1e-10), or refuses at construction with a ValueError naming what it needs (:data:`REFUSE_FSDP2`; Adam-mini
only for unevenly sharded blocked tensors);
never a silent wrong update. Supported ones round-trip through ``torch.distributed.checkpoint``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from steepest.optim._registry import REGISTRY
from tests.distributed import _ddp_workers as ddp_workers
from tests.distributed import _fsdp_workers as workers
from tests.distributed._common import assert_replicas_match, free_port, spawn_ranks

#: Optimizers that refuse DTensor parameters at construction, with a word of what they need.
REFUSE_FSDP2 = {
    "adahessian": "Hessian-vector products",
    "sophia_h": "Hessian-vector products",
    "newton_cg": "Hessian-vector products",
    "blockllm": "whole parameter tensors",
    "mfac": "full flattened gradient",
    "mdb": "one flat vector of all coordinates",
    "forward_gradient": "forward-mode tangents",
    "galore_adamw": "SVD projector",
    "fira": "SVD projector",
    "frugal": "state-full subspace",
}
#: Refused only where a blocked tensor is sharded unevenly (4 ranks: the output layer has 2 rows).
REFUSE_UNEVEN_SHARDS = {"adam_mini": "sharded evenly"}
KEYS = sorted(REGISTRY)
SUPPORTED = [k for k in KEYS if k not in REFUSE_FSDP2]


def refusal(key: str, size: int) -> str | None:
    """The phrase ``key``'s construction error must contain at ``size`` ranks, or None if it must train."""
    if key in REFUSE_FSDP2:
        return REFUSE_FSDP2[key]
    return REFUSE_UNEVEN_SHARDS.get(key) if size == 4 else None


@pytest.fixture(scope="module", params=[2, pytest.param(4, marks=pytest.mark.slow)], ids=["2ranks", "4ranks"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, list[dict[str, Any]]]:
    size = int(request.param)
    out = tmp_path_factory.mktemp(f"fsdp{size}")
    return size, spawn_ranks(workers.run_all, size, out, KEYS + list(workers.DENSE_VARIANTS))


@pytest.mark.parametrize("key", SUPPORTED + list(workers.DENSE_VARIANTS))
def test_fsdp2_matches_single_process(world: tuple[int, list[dict[str, Any]]], key: str) -> None:
    size, ranks = world
    if refusal(key, size) is not None:
        check_refused(ranks, key, size)
        return
    x, y = ddp_workers.data(size)
    reference = workers.train_variant(key, ddp_workers.make_model(), x, y)
    start = list(ddp_workers.make_model().parameters())
    assert any(not torch.equal(r, s.detach()) for r, s in zip(reference, start, strict=True)), f"{key} did not move"
    assert_replicas_match(key, [r[key] for r in ranks], reference)


def check_refused(ranks: list[dict[str, Any]], key: str, size: int) -> None:
    """Every rank's construction raised ValueError naming what ``key`` needs."""
    for r in ranks:
        message = r[key]
        assert isinstance(message, str), f"{key} trained under FSDP2 but is listed as refusing it"
        assert message.startswith("construction: ValueError:"), message
        assert "cannot update DTensor parameters" in message and str(refusal(key, size)) in message, message


@pytest.mark.parametrize("key", sorted(REFUSE_FSDP2))
def test_unsupported_optimizers_refuse_dtensors_at_construction(
    world: tuple[int, list[dict[str, Any]]], key: str
) -> None:
    size, ranks = world
    check_refused(ranks, key, size)


def test_every_registered_optimizer_is_covered() -> None:
    assert set(REFUSE_FSDP2) <= set(REGISTRY)
    assert len(SUPPORTED) + len(REFUSE_FSDP2) == len(REGISTRY)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("dcp_fsdp2")
    mp.spawn(ddp_workers.run_checkpoints, args=(2, free_port(), str(out), SUPPORTED, "fsdp2"), nprocs=2, join=True)
    results: dict[str, Any] = torch.load(Path(out) / "ckpt_rank0.pt", weights_only=False)
    return results


@pytest.mark.parametrize("key", SUPPORTED)
def test_distributed_checkpoint_round_trip_under_fsdp2(checkpoints: dict[str, Any], key: str) -> None:
    """Sharded model + optimizer state through ``torch.distributed.checkpoint``: the resumed run is bitwise."""
    assert checkpoints[key] is None, f"{key}: {checkpoints[key]}"
