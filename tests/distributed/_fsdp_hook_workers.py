"""Rank function for the FSDP2 compressed reduce-scatter tests (top level so torch.multiprocessing can pickle it).

Full-batch SGD on a fixed logistic problem (each rank its shard), with FSDP2's default reduce-scatter or
:class:`steepest.distributed.CompressedReduceScatter`; results per rank to ``{outdir}/rank{rank}.pt``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

from steepest.distributed import CompressedReduceScatter, compress_fsdp_gradients
from tests.distributed._common import init_gloo
from tests.distributed._ddp_workers import full_values
from tests.distributed._workers import STEPS_EF, bce, make_linear, make_mlp, shard_data


def shard(model: nn.Module) -> nn.Module:
    """``fully_shard`` each Linear, then the root."""
    for module in model.modules():
        if isinstance(module, nn.Linear) and module is not model:
            fully_shard(module)
    fully_shard(model)
    return model


def train(
    model: nn.Module,
    steps: int,
    lr: float,
    compressor: str | None = None,
    comms: dict[str, CompressedReduceScatter] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """``steps`` of full-batch SGD under FSDP2; the comms passed (or made from ``compressor``) are installed."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model = shard(model)
    if comms is not None:
        for name, module in model.named_modules():
            if name in comms:
                module.set_custom_reduce_scatter(comms[name])  # type: ignore[operator]
    elif compressor is not None:
        comms = compress_fsdp_gradients(model, compressor, **options)  # type: ignore[arg-type]
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = shard_data(rank, world)
    losses, err_norms, grad_norms = [], [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = bce(model, x, y)
        loss.backward()
        opt.step()
        total = loss.detach().clone()
        dist.all_reduce(total)
        losses.append(float(total) / world)
        grad_norms.append(float(torch.cat([p.grad.full_tensor().flatten() for p in model.parameters()]).norm()))
        if comms:
            errors = [c.error for c in comms.values() if c.error is not None]
            if errors:
                err_norms.append(float(torch.cat(errors).norm()))
    with torch.no_grad():
        final = bce(model, x, y).detach().clone()
    dist.all_reduce(final)
    return {
        "params": full_values(model),
        "losses": losses,
        "final_loss": float(final) / world,
        "err_norms": err_norms,
        "grad_norms": grad_norms,
        "stats": {name: c.stats for name, c in (comms or {}).items()},
        "comms": comms,
        "model": model,
        "opt": opt,
    }


def run_all(rank: int, world: int, port: int, outdir: str) -> None:
    """Every FSDP2 compression scenario on this rank."""
    init_gloo(rank, world, port, timeout_s=60)
    res: dict[str, Any] = {}
    keep = ("params", "losses", "final_loss", "err_norms", "grad_norms", "stats")
    try:
        # (1) the plumbing: unquantized chunks through the all-to-alls equal the default reduce-scatter.
        res["plain"] = train(make_mlp(), 5, 0.5)
        res["identity"] = train(make_mlp(), 5, 0.5, "quantized", bits=None, start_iter=0)
        # (2) error feedback on the logistic problem.
        res["ef_plain"] = train(make_linear(), STEPS_EF, 0.5)
        res["ef_sign"] = train(make_linear(), STEPS_EF, 0.5, "sign")
        res["ef_quant4"] = train(make_linear(), STEPS_EF, 0.5, "quantized", bits=4)
        # (3) bytes: one 64x64 layer (two FSDP modules: the Linear and an empty root), 3 compressed steps.
        for name, compressor, options in (("sign", "sign", {}), ("quant8", "quantized", {"bits": 8})):
            torch.manual_seed(1)
            big = shard(nn.Sequential(nn.Linear(64, 64)))
            comms = compress_fsdp_gradients(big, compressor, **options)  # type: ignore[arg-type]
            for i in range(4):
                if i == 1:
                    for c in comms.values():
                        c.stats = type(c.stats)()
                big(torch.randn(5, 64)).square().sum().backward()
            res[f"bytes_{name}"] = {k: c.stats for k, c in comms.items()}
        # (4) EF state round trip: 5 steps, state_dict into fresh comms, 5 more == 10 uninterrupted.
        full = train(make_mlp(), 10, 0.3, "sign")
        first = train(make_mlp(), 5, 0.3, "sign")
        saved = {name: c.state_dict() for name, c in first["comms"].items()}
        fresh = {name: CompressedReduceScatter("sign") for name in saved}
        for name, comm in fresh.items():
            comm.load_state_dict(saved[name])
        model, opt = first["model"], first["opt"]
        for name, module in model.named_modules():
            if name in fresh:
                module.set_custom_reduce_scatter(fresh[name])
        x, y = shard_data(rank, world)
        for _ in range(5):
            opt.zero_grad()
            bce(model, x, y).backward()
            opt.step()
        res["resume"] = {"full": full["params"], "resumed": full_values(model),
                         "saved_iteration": {k: v["iteration"] for k, v in saved.items()}}
        # (5) bad input.
        comm = CompressedReduceScatter("sign", start_iter=0)
        try:
            comm(torch.empty(world, dtype=torch.int64), torch.zeros(world * world, dtype=torch.int64),
                 dist.group.WORLD, dist.ReduceOp.SUM)
            res["int_grads"] = "no error"
        except TypeError as err:
            res["int_grads"] = str(err)
    finally:
        out = {k: ({f: v[f] for f in keep} if isinstance(v, dict) and "params" in v else v) for k, v in res.items()}
        torch.save(out, f"{outdir}/rank{rank}.pt")
        dist.destroy_process_group()
