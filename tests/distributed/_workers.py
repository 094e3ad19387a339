"""Rank functions spawned by the distributed tests (top level so torch.multiprocessing can pickle them).

Every rank runs all scenarios in one process group (one spawn for the whole module keeps the suite fast)
and saves its results to ``{outdir}/rank{rank}.pt``.
"""

from __future__ import annotations

import io
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from steepest.distributed import (
    QuantizedCompressionState,
    SignCompressionState,
    ef_sign_hook,
    two_way_quantized_hook,
)
from tests.distributed._common import init_gloo

STEPS_EF = 60


def shard_data(
    rank: int, world: int, n: int = 64, d: int = 6, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, ...]:
    """Rank ``rank``'s shard (``n`` rows) of a fixed logistic-regression data set of ``world * n`` rows."""
    g = torch.Generator().manual_seed(1234)
    w_true = torch.randn(d, generator=g)
    x = torch.randn(world * n, d, generator=g)
    y = (x @ w_true + 0.5 * torch.randn(world * n, generator=g) > 0).to(torch.float32)
    sl = slice(rank * n, (rank + 1) * n)
    return x[sl].to(dtype), y[sl].to(dtype)


def make_mlp(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)


def make_linear(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(6, 1).to(dtype)


def bce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(-1), y)


def train(
    model: nn.Module,
    rank: int,
    steps: int,
    lr: float,
    hook: Any = None,
    state: Any = None,
    dtype: torch.dtype = torch.float32,
    opt_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Full-batch SGD under DDP; returns final params, global losses and EF/gradient norms per step."""
    ddp = DDP(model)
    if hook is not None:
        ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=lr)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    x, y = shard_data(rank, dist.get_world_size(), dtype=dtype)
    losses, err_norms, grad_norms = [], [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = bce(ddp, x, y)
        loss.backward()
        opt.step()
        glob = loss.detach().clone()
        dist.all_reduce(glob)
        losses.append(float(glob) / dist.get_world_size())
        grad_norms.append(float(torch.cat([p.grad.flatten() for p in ddp.parameters()]).norm()))
        if state is not None and state.errors:
            err_norms.append(float(torch.cat([e.flatten() for e in state.errors.values()]).norm()))
    with torch.no_grad():
        final = float(bce(model, x, y))
    t = torch.tensor(final)
    dist.all_reduce(t)
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "losses": losses,
        "final_loss": float(t) / dist.get_world_size(),
        "err_norms": err_norms,
        "grad_norms": grad_norms,
        "opt_state": opt.state_dict(),
    }


def run_all(rank: int, world: int, port: int, outdir: str) -> None:
    """Every hook scenario on this rank (``world`` ranks); results to ``{outdir}/rank{rank}.pt``."""
    init_gloo(rank, world, port, timeout_s=30)
    res: dict[str, Any] = {}
    try:
        # (1) identity settings equal plain DDP all-reduce.
        res["plain"] = train(make_mlp(), rank, 5, 0.5)
        res["identity_quant"] = train(
            make_mlp(),
            rank,
            5,
            0.5,
            two_way_quantized_hook,
            QuantizedCompressionState(bits=None, server_bits=None, start_iter=0),
        )
        res["sign_warmup_only"] = train(make_mlp(), rank, 5, 0.5, ef_sign_hook, SignCompressionState(start_iter=10**6))
        # EF-sign in float64 against the single-process simulation done by the test.
        res["sign_f64"] = train(
            make_mlp(torch.float64), rank, 8, 0.3, ef_sign_hook, SignCompressionState(), dtype=torch.float64
        )
        # (2) bytes: a 64x64 layer, 3 compressed steps after the warm-up.
        for name, st, hook in (
            ("sign", SignCompressionState(), ef_sign_hook),
            ("sign_bucket", SignCompressionState(granularity="bucket"), ef_sign_hook),
            ("quant8", QuantizedCompressionState(bits=8), two_way_quantized_hook),
        ):
            torch.manual_seed(1)
            big = DDP(nn.Linear(64, 64))
            big.register_comm_hook(st, hook)
            for i in range(4):
                if i == 1:
                    st.reset_stats()
                big(torch.randn(5, 64)).square().sum().backward()
            res[f"bytes_{name}"] = {
                "payload": st.stats.payload_bytes,
                "baseline": st.stats.baseline_payload_bytes,
                "payload_ratio": st.stats.payload_ratio,
                "wire_ratio": st.stats.wire_ratio,
                "calls": st.stats.compressed_calls,
                "numel": sum(p.numel() for p in big.parameters()),
            }
            del big  # no DDP reducer may outlive the process group (see examples/ddp_compressed.py)
        # (3) error feedback on a small logistic problem.
        res["ef_plain"] = train(make_linear(), rank, STEPS_EF, 0.5)
        res["ef_sign"] = train(make_linear(), rank, STEPS_EF, 0.5, ef_sign_hook, SignCompressionState())
        res["ef_sign_l2"] = train(make_linear(), rank, STEPS_EF, 0.5, ef_sign_hook, SignCompressionState(scale="l2"))
        res["ef_quant4"] = train(
            make_linear(), rank, STEPS_EF, 0.5, two_way_quantized_hook, QuantizedCompressionState(bits=4)
        )
        # (4) checkpoint/resume with the hook state equals an uninterrupted run (EF keyed by parameter name),
        # and the bucket-keyed state refuses a changed bucket layout instead of mixing up parameters.
        for name, make_state, hook in (
            ("sign", SignCompressionState, ef_sign_hook),
            ("quant", lambda **kw: QuantizedCompressionState(bits=3, **kw), two_way_quantized_hook),
            ("sign_bucketkey", None, ef_sign_hook),
        ):
            keyed = make_state is not None
            mk = make_state if make_state is not None else SignCompressionState
            full_model = make_mlp()
            full = train(full_model, rank, 10, 0.3, hook, mk(**({"module": full_model} if keyed else {})))
            model = make_mlp()
            st = mk(**({"module": model} if keyed else {}))
            first = train(model, rank, 5, 0.3, hook, st)
            blob = io.BytesIO()
            torch.save({"hook": st.state_dict(), "opt": first["opt_state"], "model": model.state_dict()}, blob)
            blob.seek(0)
            ckpt = torch.load(blob, weights_only=True)
            model2 = make_mlp()  # as a fresh process would: rebuild, then load the checkpoint
            model2.load_state_dict(ckpt["model"])
            st2 = mk(**({"module": model2} if keyed else {}))
            st2.load_state_dict(ckpt["hook"])
            entry: dict[str, Any] = {"full": full["params"], "saved": ckpt["hook"]}
            try:
                second = train(model2, rank, 5, 0.3, hook, st2, opt_state=ckpt["opt"])
                entry["resumed"] = second["params"]
                entry["reloaded"] = st2.state_dict()
            except RuntimeError as exc:
                entry["error"] = str(exc)
                dist.barrier()
            res[f"resume_{name}"] = entry
    finally:
        torch.save(res, f"{outdir}/rank{rank}.pt")
        dist.destroy_process_group()
