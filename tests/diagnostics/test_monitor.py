"""HessianDiagnostics in a training loop: per-block figures against exact Hessians; DDP all-reduce."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from steepest.diagnostics import HessianDiagnostics
from tests.diagnostics._problems import exact_hessian, tiny_mlp


@pytest.mark.parametrize("method", ["autograd", "func"])
def test_report_matches_exact_block_hessians(method: str) -> None:
    model, loss_fn, batch = tiny_mlp(seed=7)
    groups = {"first": ["0.weight", "0.bias"], "last": ["2.weight"]}
    monitor = HessianDiagnostics(
        groups,
        top_k=2,
        lanczos_steps=26,
        trace_probes=200,
        spectrum_steps=10,
        method=method,  # type: ignore[arg-type]
    )
    report = monitor(model, loss_fn, batch)
    assert list(report.blocks) == ["first", "last"]
    assert report.model is not None and report.model.num_params == 26
    if method == "autograd":
        assert report.loss == pytest.approx(float(loss_fn(model, batch).detach()))
    for name, names in [("model", None), *groups.items()]:
        block = report.model if name == "model" else report.blocks[name]
        assert block is not None
        hess = exact_hessian(model, loss_fn, batch, names)
        eig = torch.linalg.eigvalsh(hess)
        assert block.top_eigenvalues[0] == pytest.approx(float(eig[-1]), rel=1e-8)
        assert block.trace is not None and block.trace_stderr is not None
        assert abs(block.trace - float(hess.trace())) < 4 * block.trace_stderr + 1e-12
        assert block.spectrum is not None and block.spectrum.nodes.shape == (1, min(10, block.num_params))
    tops = [b.top_eigenvalues[0] for b in report.blocks.values()]
    assert report.top_eigenvalue_spread() == pytest.approx(max(tops) / min(tops))


def test_monitor_in_a_training_loop_does_not_disturb_training() -> None:
    model, loss_fn, batch = tiny_mlp(seed=8)
    twin, _, _ = tiny_mlp(seed=8)
    monitor = HessianDiagnostics("module", top_k=1, lanczos_steps=5)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin)]
    for step in range(3):
        for m, opt in zip((model, twin), opts, strict=True):
            opt.zero_grad()
            loss_fn(m, batch).backward()
            if m is model:
                report = monitor(m, loss_fn, batch)  # between backward and step
                assert list(report.blocks) == ["0", "2"], step
            opt.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_seeded_monitor_is_reproducible() -> None:
    model, loss_fn, batch = tiny_mlp(seed=9)
    a = HessianDiagnostics(trace_probes=5, seed=3)(model, loss_fn, batch)
    b = HessianDiagnostics(trace_probes=5, seed=3)(model, loss_fn, batch)
    c = HessianDiagnostics(trace_probes=5, seed=4)(model, loss_fn, batch)
    assert a.model is not None and b.model is not None and c.model is not None
    assert a.model.trace == b.model.trace and a.model.trace != c.model.trace


def test_all_reduce_on_a_single_rank_group(tmp_path: Path) -> None:
    model, loss_fn, batch = tiny_mlp(seed=10)
    local = HessianDiagnostics(trace_probes=3, seed=1)(model, loss_fn, batch)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        reduced = HessianDiagnostics(trace_probes=3, seed=1, all_reduce=True)(model, loss_fn, batch)
    finally:
        dist.destroy_process_group()
    assert local.model is not None and reduced.model is not None
    assert reduced.model.top_eigenvalues == pytest.approx(local.model.top_eigenvalues)
    assert reduced.model.trace == pytest.approx(local.model.trace)


def test_bad_arguments() -> None:
    for kwargs in ({"top_k": -1}, {"trace_probes": -2}, {"spectrum_probes": 0}, {"lanczos_steps": 0}, {"method": "x"}):
        with pytest.raises(ValueError):
            HessianDiagnostics(**kwargs)  # type: ignore[arg-type]
