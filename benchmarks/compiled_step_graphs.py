"""Graphs and graph breaks of a user-compiled ``opt.step`` under a per-step scheduler (issue #23 item 2).

``python benchmarks/compiled_step_graphs.py [KEY ...]`` (default: lion adabelief lamb adam_mini)
compiles ``opt.step`` with ``torch.compile`` for a 10-tensor MLP, drives it 10 steps under a
``LambdaLR`` that changes the learning rate every step, and prints dynamo's ``unique_graphs`` and
graph-break count with a float ``lr`` and with a tensor ``lr``. Counts, not timings: safe to run
on a busy machine.
"""

from __future__ import annotations

import sys
import warnings

import torch
from torch._dynamo.utils import counters

import steepest


def count(key: str, tensor_lr: bool, steps: int = 10) -> tuple[int, int, list[str]]:
    """``(unique graphs, graph breaks, break reasons)`` for ``steps`` compiled steps of ``key``."""
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(5)])
    named = list(model.named_parameters())
    params = named if steepest.REGISTRY[key].capabilities.needs_named_parameters else [p for _, p in named]
    extra = {"dim": 8, "n_heads": 1} if key == "adam_mini" else {}
    opt = steepest.create_optimizer(key, params, lr=torch.tensor(1e-3) if tensor_lr else 1e-3, **extra)
    step = torch.compile(opt.step)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    x = torch.randn(4, 8)
    for _ in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        step()
        scheduler.step()
    reasons = [reason.splitlines()[0][:80] for reason in counters["graph_break"]]
    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values()), reasons


def main() -> None:
    warnings.simplefilter("ignore")
    keys = sys.argv[1:] or ["lion", "adabelief", "lamb", "adam_mini"]
    print(f"torch {torch.__version__}; 10 steps of torch.compile(opt.step) under a per-step LambdaLR")
    for key in keys:
        for tensor_lr in (False, True):
            graphs, breaks, reasons = count(key, tensor_lr)
            lr = "tensor lr" if tensor_lr else "float lr "
            print(f"{key:12s} {lr}  graphs={graphs:2d}  graph breaks={breaks}  {reasons}")


if __name__ == "__main__":
    main()
