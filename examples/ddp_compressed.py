"""Train a small classifier with DDP on 2 CPU processes, gradients compressed by EF-SignSGD.

Run ``python examples/ddp_compressed.py [--hook sign|two_way|none] [--steps 200]``. Each rank gets its own
shard of scikit-learn's digits (offline), the model is wrapped in ``DistributedDataParallel`` (gloo), and
the chosen ``steepest.distributed`` hook replaces DDP's all-reduce. Rank 0 prints the training loss, the
bytes the hook handed to the collectives against an uncompressed all-reduce, and saves a checkpoint that
includes the hook's error-feedback state (restore it with ``state.load_state_dict``).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import steepest
from steepest.distributed import QuantizedCompressionState, SignCompressionState, ef_sign_hook, two_way_quantized_hook


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, hook: str, steps: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)[rank::world]
    y = torch.tensor(y)[rank::world]
    torch.manual_seed(0)  # the same initial weights on every rank
    model = DistributedDataParallel(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)))
    state: SignCompressionState | QuantizedCompressionState | None = None
    if hook == "sign":
        state = SignCompressionState(module=model.module)
        model.register_comm_hook(state, ef_sign_hook)
    elif hook == "two_way":
        state = QuantizedCompressionState(bits=8, module=model.module)
        model.register_comm_hook(state, two_way_quantized_hook)
    opt = steepest.Lion(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(rank)
    for step in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if rank == 0 and (step % 50 == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {loss.item():.4f}")
    with torch.no_grad():
        full = nn.functional.cross_entropy(model(x), y).item()
    if rank == 0:
        print(f"final loss on rank 0's shard: {full:.4f}")
        if state is not None:
            s = state.stats
            ratio = f"{s.payload_bytes:,} vs {s.baseline_payload_bytes:,} uncompressed ({s.payload_ratio:.1f}x)"
            print(f"hook bytes: {ratio}")
        checkpoint = {"model": model.module.state_dict(), "optimizer": opt.state_dict()}
        if state is not None:
            checkpoint["hook"] = state.state_dict()
        torch.save(checkpoint, os.path.join(out_dir, "checkpoint_rank0.pt"))
    # Free DDP (its reducer holds the process group) before destroying the group: the last reference
    # dropped at function exit would destroy the gloo group while holding the GIL, which its worker
    # thread may need (a teardown deadlock seen with torch 2.13).
    del model, opt
    dist.destroy_process_group()


def main() -> None:
    """Spawn the ranks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hook", choices=("sign", "two_way", "none"), default="sign")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--world", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(args.world, _free_port(), args.hook, args.steps, out_dir), nprocs=args.world)


if __name__ == "__main__":
    main()
