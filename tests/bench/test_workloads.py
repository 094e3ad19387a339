"""Every registered workload at ``tiny`` size: offline, deterministic, trainable, and reporting its target metric.

The data of every workload is built once per module, in a fresh cache directory and with every socket call
refused, so the real loaders (MNIST-1D generation, MNIST-5k parsing, the KJV text) run under the block.
Listing a workload (its target and budget at every size) must not build its data.
"""

from __future__ import annotations

import gzip
import math
import socket
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
import torch

import steepest
from steepest.bench.models import TinyGPT
from steepest.bench.workloads import Workload, get_workload, workload_names
from steepest.bench.workloads._cache import cache_key, cached_arrays
from steepest.bench.workloads.image_cnn import FASHION, MNIST5K, ImageCNN, read_idx
from steepest.bench.workloads.zipf_softmax import N_GROUPS, ZipfSoftmax, frequency_groups, zipf_counts

#: The workloads this suite must find registered (others may be added).
EXPECTED = {"zipf_softmax", "least_squares", "matrix_sensing", "mnist1d_mlp", "image_cnn", "char_lm",
            "test_functions_2d"}

#: AdamW learning rates for the few-step decrease check (defaults to 1e-2).
ADAMW_LR = {"test_functions_2d": 5e-2}

#: Workloads whose model and batches never touch the global RNG (least_squares builds an ``nn.Linear``
#: before overwriting its weights, which draws from it; the runner seeds the global RNG anyway).
RNG_CLEAN = EXPECTED - {"least_squares"}


class NetworkBlocked(RuntimeError):
    pass


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise NetworkBlocked(f"network access attempted: {args!r}")


def _block_network(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(socket.socket, "connect", _refuse)
    mp.setattr(socket.socket, "connect_ex", _refuse)
    mp.setattr(socket, "create_connection", _refuse)
    mp.setattr(socket, "getaddrinfo", _refuse)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("steepest-cache")


@pytest.fixture(scope="module")
def built(cache_root: Path) -> Iterator[dict[str, Workload]]:
    """Every registered workload at tiny size, built with no network and an empty cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STEEPEST_CACHE_DIR", str(cache_root))
        mp.delenv("STEEPEST_IMAGE_SOURCE", raising=False)
        _block_network(mp)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkBlocked):
            sock.connect(("127.0.0.1", 9))  # the block is effective
        workloads = {name: get_workload(name, "tiny") for name in workload_names()}
        for workload in workloads.values():  # data may be built lazily: touch it under the block
            next(workload.train_batches(0))
            workload.evaluate(workload.init_model(0))
        yield workloads


def test_expected_workloads_are_registered(built: dict[str, Workload]) -> None:
    assert EXPECTED <= set(built)


def test_listing_builds_no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEEPEST_CACHE_DIR", str(tmp_path))
    for name in ("mnist1d_mlp", "image_cnn", "matrix_sensing"):
        for size in ("tiny", "quick", "full"):
            workload = get_workload(name, size)  # type: ignore[arg-type]
            assert workload.target.metric and workload.budget.max_steps > 0
    assert not list(tmp_path.iterdir())  # nothing generated or parsed, so nothing cached


def test_cache_written_while_offline(built: dict[str, Workload], cache_root: Path) -> None:
    names = {p.name.split("-")[0] for p in cache_root.glob("*.npz")}
    assert "mnist1d" in names
    if built["image_cnn"].source == MNIST5K:  # type: ignore[attr-defined]
        assert "mnist5k" in names


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, tuple | list):
        return isinstance(b, tuple | list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_deterministic_for_a_seed(name: str, built: dict[str, Workload], cache_root: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEEPEST_CACHE_DIR", str(cache_root))  # the second build reads the cache
    first, second = built[name], get_workload(name, "tiny")
    assert first is not second
    p1, p2 = _params(first.init_model(3)), _params(second.init_model(3))
    assert all(torch.equal(a, b) for a, b in zip(p1, p2, strict=True))
    other = _params(first.init_model(4))
    assert any(not torch.equal(a, b) for a, b in zip(p1, other, strict=True)), "the seed must change the model"
    b1, b2 = first.train_batches(5), second.train_batches(5)
    for _ in range(3):
        assert _same(next(b1), next(b2))
    model = first.init_model(3)
    assert first.evaluate(model) == second.evaluate(model)
    if name in RNG_CLEAN:
        state = torch.random.get_rng_state()
        first.init_model(7)
        next(first.train_batches(7))
        assert torch.equal(state, torch.random.get_rng_state()), "workloads must not consume the global RNG"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_evaluate_reports_target_metric(name: str, built: dict[str, Workload]) -> None:
    workload = built[name]
    metrics = workload.evaluate(workload.init_model(0))
    for key in ("train_loss", "val_loss", workload.target.metric, *workload.extra_metrics):
        assert key in metrics, f"{name}: evaluate() lacks {key!r}"
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key])
    assert not workload.target.reached(metrics), f"{name}: the target is met at initialisation"
    assert workload.target.set_by
    budget = workload.budget
    assert budget.max_steps > 0 and budget.eval_every > 0 and budget.batch_size > 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_decreases_under_adamw(name: str, built: dict[str, Workload]) -> None:
    workload = built[name]
    torch.manual_seed(0)
    model = workload.init_model(0)
    params, extra = steepest.optimizer_params("adamw", model, **workload.model_facts())
    optimizer = steepest.create_optimizer("adamw", params, lr=ADAMW_LR.get(name, 1e-2), weight_decay=0.0, **extra)
    batches = workload.train_batches(0)
    fixed = next(batches)
    with torch.no_grad():
        before = float(workload.loss(model, fixed))
    for _ in range(10):
        optimizer.zero_grad()
        workload.loss(model, next(batches)).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(workload.loss(model, fixed))
    assert after < 0.9 * before, f"{name}: loss {before:.4g} -> {after:.4g} after 10 AdamW steps"
    assert workload.evaluate(model)["train_loss"] < workload.evaluate(workload.init_model(0))["train_loss"]


# -- zipf_softmax --------------------------------------------------------------------------------------------


def test_zipf_counts_are_heavy_tailed() -> None:
    counts = zipf_counts(300, 3000)
    assert counts.min() >= 1 and counts[0] > 100 * counts[-1] / 2
    assert bool((counts[:-1] >= counts[1:]).all())
    assert int((counts <= 2).sum()) > 100  # a long tail of classes seen once or twice


def test_frequency_groups_cut_equal_mass_from_frequent_to_rare() -> None:
    counts = zipf_counts(200, 1500)
    group = frequency_groups(counts)
    mass = torch.bincount(group, weights=counts.double(), minlength=N_GROUPS)
    assert group.unique().numel() == N_GROUPS and bool((mass > 0).all())
    assert bool((group[:-1] <= group[1:]).all())  # sorted counts -> non-decreasing group ids
    assert float(mass[1:].max() / mass[1:].min()) < 2.0  # roughly equal mass (group 0 is the top class)
    with pytest.raises(ValueError, match="at least"):
        frequency_groups(zipf_counts(5, 50))


def test_zipf_group_losses_match_evaluate(built: dict[str, Workload]) -> None:
    workload = built["zipf_softmax"]
    assert isinstance(workload, ZipfSoftmax)
    model = workload.init_model(0)
    metrics = workload.evaluate(model)
    groups = workload.group_losses(model)
    assert [round(float(v), 6) for v in groups] == [round(metrics[f"loss_group_{i}"], 6) for i in range(N_GROUPS)]
    sizes = torch.bincount(workload.sample_group, minlength=N_GROUPS).double()
    assert float((groups.double() * sizes).sum() / sizes.sum()) == pytest.approx(metrics["train_loss"], rel=1e-5)


# -- image_cnn -----------------------------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_roundtrip_and_errors(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", data)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), data)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="unsigned-byte"):
        read_idx(tmp_path / "bad")


def test_image_cnn_prefers_fashion_mnist_when_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 100)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    monkeypatch.setenv("STEEPEST_FASHION_MNIST_DIR", str(tmp_path))
    monkeypatch.delenv("STEEPEST_IMAGE_SOURCE", raising=False)
    workload = ImageCNN("tiny")
    assert workload.source == FASHION and "Fashion-MNIST" in workload.target.set_by
    assert workload.y_train.numel() == 200 and workload.y_val.numel() == 100
    assert workload.evaluate(workload.init_model(0))["fashion_mnist"] == 1.0
    monkeypatch.setenv("STEEPEST_IMAGE_SOURCE", "cifar")
    with pytest.raises(ValueError, match="STEEPEST_IMAGE_SOURCE"):
        ImageCNN("tiny")


def test_image_cnn_says_which_data(built: dict[str, Workload]) -> None:
    workload = built["image_cnn"]
    assert isinstance(workload, ImageCNN)
    flag = workload.evaluate(workload.init_model(0))["fashion_mnist"]
    assert flag == (1.0 if workload.source == FASHION else 0.0)
    assert workload.data_source.split(" ")[0] in workload.target.set_by
    if workload.source == MNIST5K:  # 400 / 100 per class at most, balanced
        assert torch.bincount(workload.y_val, minlength=10).unique().numel() == 1


# -- cache ---------------------------------------------------------------------------------------------------


def test_cache_rebuilds_corrupt_files_and_can_be_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"a": np.arange(3)}

    monkeypatch.setenv("STEEPEST_CACHE_DIR", str(tmp_path))
    assert np.array_equal(cached_arrays("t", {"k": 1}, build)["a"], np.arange(3))
    assert np.array_equal(cached_arrays("t", {"k": 1}, build)["a"], np.arange(3))
    assert len(calls) == 1
    (tmp_path / f"{cache_key('t', {'k': 1})}.npz").write_bytes(b"garbage")
    assert np.array_equal(cached_arrays("t", {"k": 1}, build)["a"], np.arange(3))
    assert len(calls) == 2
    monkeypatch.setenv("STEEPEST_CACHE_DIR", "")
    cached_arrays("t", {"k": 1}, build)
    assert len(calls) == 3


# -- TinyGPT -------------------------------------------------------------------------------------------------


def test_tinygpt_is_seeded_and_causal() -> None:
    a, b = TinyGPT(16, 32, 4, 2, 8, seed=1), TinyGPT(16, 32, 4, 2, 8, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.wte.weight, TinyGPT(16, 32, 4, 2, 8, seed=2).wte.weight)
    tokens = torch.randint(0, 16, (2, 8), generator=torch.Generator().manual_seed(0))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 16
    with torch.no_grad():
        out, out_changed = a(tokens), a(changed)
    assert torch.equal(out[:, :5], out_changed[:, :5]) and not torch.equal(out[:, 5:], out_changed[:, 5:])
    with pytest.raises(ValueError, match="context"):
        a(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple"):
        TinyGPT(16, 30, 4, 1, 8)


def test_tinygpt_names_fit_adam_mini() -> None:
    model = TinyGPT(16, 32, 4, 2, 8, seed=0)
    params, extra = steepest.optimizer_params("adam_mini", model, **model.model_facts())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no tensor of two or more dimensions may fall through the rules
        opt = steepest.create_optimizer("adam_mini", params, lr=1e-3, **extra)
    report = opt.partition_report()  # type: ignore[attr-defined]
    rules = {line.split("  ")[0]: line.split("  ")[2] for line in report.splitlines()[1:]}
    assert rules["blocks.0.attn.q_proj.weight"] == "head" and rules["blocks.1.attn.k_proj.weight"] == "head"
    assert rules["blocks.0.attn.v_proj.weight"] == "row" and rules["blocks.0.mlp.fc_in.weight"] == "row"
    assert rules["wte.weight"] == "row" and rules["lm_head.weight"] == "row"
    assert rules["norm_f.weight"] == "tensor"
