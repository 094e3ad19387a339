"""Issue claim: the memory-efficient optimizers train about as well as AdamW at tuned learning rates.

Each optimizer trains the same model (same seed, same batches) for ``steps`` steps at every learning
rate of its grid; its score is the best final validation loss over the grid (a small tuning budget,
equal for all). The figure is the gap to AdamW's best: ``loss / adamw_loss - 1``. The model comes from
a benchmark workload (by default the tiny character-level transformer, ``char_lm``), so the
optimizers get their constructor arguments from :func:`steepest.optimizer_params` with the
workload's model facts (Adam-mini's ``dim`` and ``n_heads``, GaLore's projected linear layers, ...).

Run ``python -m steepest.repro.memory_efficient_quality [--size quick] [--steps 300]``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steepest.bench.workloads import Size, Workload, get_workload
from steepest.optim import create_optimizer, optimizer_params

#: The optimizers of the memory-efficient family and their learning-rate grids (log-spaced, 4 points
#: around the value their papers use for small models).
GRIDS: dict[str, tuple[float, ...]] = {
    "adamw": (3e-4, 1e-3, 3e-3, 1e-2),
    "adam_mini": (3e-4, 1e-3, 3e-3, 1e-2),
    "galore_adamw": (1e-3, 3e-3, 1e-2, 3e-2),
    "fira": (1e-3, 3e-3, 1e-2, 3e-2),
    "frugal": (3e-4, 1e-3, 3e-3, 1e-2),
    "scale": (3e-4, 1e-3, 3e-3, 1e-2),
    "blockllm": (3e-4, 1e-3, 3e-3, 1e-2),
}

#: Hyperparameters besides the learning rate, so that a short run exercises each method's mechanism
#: (projection refreshes, re-selection) the way a long run would.
EXTRA: dict[str, dict[str, Any]] = {
    "galore_adamw": {"scale": 0.25},
    "fira": {"scale": 0.25},
    "frugal": {"update_gap": 50, "density": 0.25},
    "blockllm": {"sparsity": 0.5, "update_freq": 25, "patience": 10, "exclude": ()},
}

#: Model facts per optimizer on top of the workload's (projection refresh within a short run).
FACTS: dict[str, dict[str, Any]] = {"galore_adamw": {"update_proj_gap": 50}, "fira": {"update_proj_gap": 50}}


@dataclass(frozen=True)
class QualityResult:
    """One optimizer's best run: its learning rate, final validation loss, and gap to AdamW's best."""

    optimizer: str
    lr: float
    val_loss: float
    gap: float


def _closure(workload: Workload, model: torch.nn.Module, opt: torch.optim.Optimizer, batch: Any) -> Callable[[], Any]:
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = workload.loss(model, batch)
        if torch.is_grad_enabled():
            loss.backward()
        return loss

    return closure


def train(workload: Workload, optimizer: str, lr: float, steps: int, seed: int = 0) -> float:
    """Train ``workload``'s model with ``optimizer`` at ``lr`` for ``steps`` steps; return the final val loss."""
    torch.manual_seed(seed)
    model = workload.init_model(seed)
    params, extra = optimizer_params(optimizer, model, **{**workload.model_facts(), **FACTS.get(optimizer, {})})
    opt = create_optimizer(optimizer, params, lr=lr, **{**extra, **EXTRA.get(optimizer, {})})
    batches = workload.train_batches(seed)
    for _ in range(steps):
        loss = opt.step(_closure(workload, model, opt, next(batches)))
        value = loss.detach() if isinstance(loss, torch.Tensor) else loss
        if value is not None and not math.isfinite(float(value)):
            return math.inf
    return float(workload.evaluate(model)["val_loss"])


def compare(
    workload: Workload, optimizers: Sequence[str] = tuple(GRIDS), steps: int = 300, seed: int = 0
) -> list[QualityResult]:
    """Best-over-grid final validation loss per optimizer and its relative gap to AdamW's (AdamW first)."""
    best: dict[str, tuple[float, float]] = {}
    for key in ("adamw", *[k for k in optimizers if k != "adamw"]):
        runs = [(train(workload, key, lr, steps, seed), lr) for lr in GRIDS[key]]
        best[key] = min(runs)
    reference = best["adamw"][0]
    return [QualityResult(k, lr, loss, loss / reference - 1.0) for k, (loss, lr) in best.items()]


def main(argv: list[str] | None = None) -> int:
    """Print the comparison table for a workload."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="char_lm")
    parser.add_argument("--size", default="quick", choices=("tiny", "quick", "full"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    size: Size = args.size
    results = compare(get_workload(args.workload, size), steps=args.steps, seed=args.seed)
    print(f"# {args.workload} ({args.size}), {args.steps} steps, best of {len(GRIDS['adamw'])} learning rates each")
    print(f"{'optimizer':<14} {'lr':>8} {'val loss':>9} {'vs AdamW':>9}")
    for r in results:
        print(f"{r.optimizer:<14} {r.lr:>8.0e} {r.val_loss:>9.4f} {r.gap:>+9.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
