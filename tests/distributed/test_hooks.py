"""DDP compression hooks on 2 gloo ranks (4 in the slow tier; one spawn per world size); compressors in-process."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from steepest.distributed import (
    QuantizedCompressionState,
    SignCompressionState,
    dequantize_rows,
    ef_sign_hook,
    pack_signs,
    quantize_rows,
    scaled_sign,
    two_way_quantized_hook,
    unpack_signs,
)
from tests.distributed import _workers
from tests.distributed._common import spawn_ranks


@pytest.fixture(scope="module", params=[2, pytest.param(4, marks=pytest.mark.slow)], ids=["2ranks", "4ranks"])
def results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    world = int(request.param)
    return spawn_ranks(_workers.run_all, world, tmp_path_factory.mktemp(f"hooks{world}"))


# ---------------------------------------------------------------- (1) identity == plain DDP


def test_identity_quantizer_equals_ddp_allreduce(results: list[dict[str, Any]]) -> None:
    for res in results:
        for a, b in zip(res["plain"]["params"], res["identity_quant"]["params"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert res["plain"]["losses"][-1] < res["plain"]["losses"][0]


def test_warmup_path_is_exactly_ddp(results: list[dict[str, Any]]) -> None:
    for res in results:
        for a, b in zip(res["plain"]["params"], res["sign_warmup_only"]["params"], strict=True):
            assert torch.equal(a, b)


def test_ranks_stay_in_sync(results: list[dict[str, Any]]) -> None:
    for key in ("sign_f64", "ef_sign", "ef_quant4", "identity_quant"):
        for other in results[1:]:
            for a, b in zip(results[0][key]["params"], other[key]["params"], strict=True):
                assert torch.equal(a, b), key


def _simulate_ef_sign(steps: int, lr: float, world: int) -> list[torch.Tensor]:
    """Single-process float64 EF-SignSGD over ``world`` workers: per-tensor L1 scale, sign(0)=+1, step 0 exact."""
    model = _workers.make_mlp(torch.float64)
    params = list(model.parameters())
    shards = [_workers.shard_data(r, world, dtype=torch.float64) for r in range(world)]
    errors = [[torch.zeros_like(p) for p in params] for _ in range(world)]
    for t in range(steps):
        sent: list[list[torch.Tensor]] = []
        for r, (x, y) in enumerate(shards):
            grads = torch.autograd.grad(_workers.bce(model, x, y), params)
            if t == 0:
                sent.append(list(grads))
                continue
            out = []
            for i, g in enumerate(grads):
                q = g + errors[r][i]
                scale = q.abs().mean().float().double()  # the hook sends the scale as float32
                c = scale * torch.where(q >= 0, 1.0, -1.0).to(q.dtype)
                errors[r][i] = q - c
                out.append(c)
            sent.append(out)
        with torch.no_grad():
            for i, p in enumerate(params):
                p -= lr * sum(s[i] for s in sent) / world
    return [p.detach() for p in params]


def test_ef_sign_matches_single_process_simulation(results: list[dict[str, Any]]) -> None:
    expected = _simulate_ef_sign(8, 0.3, len(results))
    for a, b in zip(results[0]["sign_f64"]["params"], expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- (2) bytes


def test_sign_compression_ratio(results: list[dict[str, Any]]) -> None:
    b = results[0]["bytes_sign"]
    d = b["numel"]  # 64*64 + 64, two tensors (weight, bias)
    assert b["calls"] == 3
    assert b["baseline"] == 3 * 4 * d
    assert b["payload"] == 3 * (math.ceil(d / 8) + 4 * 2)  # packed bits + one float32 scale per tensor
    assert 31.0 < b["payload_ratio"] < 32.0
    # all-gather sends (N-1) copies of the payload vs a ring all-reduce's 2(N-1)/N copies of the bucket
    world = len(results)
    assert b["wire_ratio"] == pytest.approx(b["payload_ratio"] * 2 / world)
    assert results[0]["bytes_sign_bucket"]["payload"] == 3 * (math.ceil(d / 8) + 4)


def test_two_way_quantized_compression_ratio(results: list[dict[str, Any]]) -> None:
    b = results[0]["bytes_quant8"]
    d = b["numel"]
    world = len(results)
    chunk = math.ceil(d / world)
    up, down = world * chunk + 4 * world, chunk + 4
    assert b["payload"] == 3 * (up + down)
    # int8 codes: 4x fewer bytes on the wire than a float32 ring all-reduce (up to the scales and padding)
    assert 3.9 < b["wire_ratio"] <= 4.0


# ---------------------------------------------------------------- (3) error feedback


def test_ef_error_stays_bounded(results: list[dict[str, Any]]) -> None:
    for key in ("ef_sign", "ef_sign_l2", "ef_quant4"):
        for res in results:
            err, grads = res[key]["err_norms"], res[key]["grad_norms"]
            assert len(err) == _workers.STEPS_EF - 1
            assert all(math.isfinite(e) for e in err)
            # ||e|| is bounded by a constant times the largest gradient (Karimireddy et al., Lemma 3);
            # the constant 5 is loose (measured: 1.3), and the error does not grow over the last half of the run.
            assert max(err) <= 5 * max(grads), key
            assert max(err[len(err) // 2 :]) <= 1.5 * max(err[: len(err) // 2]), key


def test_ef_compressed_training_matches_uncompressed_loss(results: list[dict[str, Any]]) -> None:
    res = results[0]
    plain = res["ef_plain"]["final_loss"]
    start = res["ef_plain"]["losses"][0]
    assert plain < 0.7 * start  # the problem is actually being solved
    # stated margin: final loss within 2% (relative) of the uncompressed run after 60 full-batch steps
    for key in ("ef_sign", "ef_sign_l2", "ef_quant4"):
        assert res[key]["final_loss"] <= plain * 1.02, (key, res[key]["final_loss"], plain)


# ---------------------------------------------------------------- (4) state_dict round trip


@pytest.mark.parametrize("name", ["sign", "quant"])
def test_hook_state_checkpoint_resume(results: list[dict[str, Any]], name: str) -> None:
    for res in results:
        r = res[f"resume_{name}"]
        assert r["saved"]["iteration"] == 5
        assert r["saved"]["config"]["keyed_by"] == "parameter"
        assert any(e.abs().sum() > 0 for e in r["saved"]["errors"].values())
        assert r["reloaded"]["iteration"] == 10
        for a, b in zip(r["full"], r["resumed"], strict=True):
            if name == "sign":  # per-tensor scales do not depend on the bucket layout: the resume is exact
                assert torch.equal(a, b)
            else:
                # the first step after a resume quantizes with DDP's pre-rebuild bucket layout (other chunk
                # scales), so the trajectory is a valid EF run but not bit-identical; it stays close
                torch.testing.assert_close(a, b, rtol=0, atol=2e-2)
    if name == "quant":
        assert results[0]["resume_quant"]["saved"]["server_errors"]


def test_bucket_keyed_state_never_silently_misapplies_error(results: list[dict[str, Any]]) -> None:
    for res in results:
        r = res["resume_sign_bucketkey"]
        if "error" in r:  # DDP's first (pre-rebuild) bucket layout differs from the saved one
            assert "layout" in r["error"]
        else:  # the layouts happened to agree: then the resume must be exact
            for a, b in zip(r["full"], r["resumed"], strict=True):
                assert torch.equal(a, b)


def test_load_state_dict_rejects_other_config() -> None:
    sd = SignCompressionState(scale="l1").state_dict()
    with pytest.raises(ValueError, match="config"):
        SignCompressionState(scale="l2").load_state_dict(sd)


# ---------------------------------------------------------------- bad input, in-process


class _FakeBucket:
    def __init__(self, buf: torch.Tensor) -> None:
        self._buf = buf

    def buffer(self) -> torch.Tensor:
        return self._buf

    def index(self) -> int:
        return 0


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64])
def test_non_float_bucket_raises(dtype: torch.dtype) -> None:
    bucket = _FakeBucket(torch.zeros(4, dtype=dtype))
    with pytest.raises(TypeError, match="floating-point"):
        ef_sign_hook(SignCompressionState(), bucket)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating-point"):
        two_way_quantized_hook(QuantizedCompressionState(), bucket)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        SignCompressionState(scale="linf")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SignCompressionState(granularity="layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        QuantizedCompressionState(bits=1)
    with pytest.raises(ValueError):
        QuantizedCompressionState(bits=8, server_bits=9)
    with pytest.raises(ValueError):
        SignCompressionState(start_iter=-1)


# ---------------------------------------------------------------- compressors


def test_pack_unpack_roundtrip() -> None:
    x = torch.randn(37, generator=torch.Generator().manual_seed(0))
    x[3] = 0.0
    packed = pack_signs(x)
    assert packed.dtype == torch.uint8 and packed.numel() == 5
    expected = torch.where(x >= 0, 1.0, -1.0)
    assert torch.equal(unpack_signs(packed, 37), expected)


def test_scaled_sign_is_least_squares_per_segment() -> None:
    x = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, scales, c = scaled_sign(x, [6, 4], "l1")
    torch.testing.assert_close(
        scales.double(), torch.stack([x[:6].abs().mean(), x[6:].abs().mean()]), rtol=1e-6, atol=0
    )
    # delta-approximation identity ||C(x) - x||^2 = ||x||^2 - ||x||_1^2 / d on each segment
    for sl in (slice(0, 6), slice(6, 10)):
        seg = x[sl]
        lhs = (c[sl] - seg).square().sum()
        torch.testing.assert_close(lhs, seg.square().sum() - seg.abs().sum() ** 2 / seg.numel(), rtol=1e-6, atol=1e-9)
    _, s2, _ = scaled_sign(x, [10], "l2")
    torch.testing.assert_close(s2.double(), x.norm().reshape(1) / 10**0.5, rtol=1e-6, atol=0)


def test_quantize_rows_error_bound() -> None:
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(2))
    x[1] = 0.0
    for bits in (2, 4, 8):
        codes, scales = quantize_rows(x, bits)
        assert codes.dtype == torch.int8
        assert int(codes.abs().max()) <= 2 ** (bits - 1) - 1
        err = (dequantize_rows(codes, scales, x.dtype) - x).abs()
        assert bool((err <= scales.unsqueeze(1) / 2 + 1e-6).all())
        assert scales[1] == 0 and bool((codes[1] == 0).all())
