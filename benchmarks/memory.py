"""Optimizer-state bytes and peak process memory of a training step, GPT-2-small shaped, on CPU.

For each optimizer this prints the exact state bytes (``steepest.state_bytes``) after one step,
and the peak resident memory of a process that builds the model, runs forward, backward and
one optimizer step, each as a ratio to AdamW. Every optimizer runs in its own fresh process so
peaks do not mix. The model: 12 layers, d=768, 12 heads, vocab 50257, separate q/k/v/o
projections (names that Adam-mini recognises), untied head: about 163M parameters (124M with
the head tied, which SCALE and this benchmark do not assume).

Run: ``python benchmarks/memory.py [--layers 12] [--only KEY ...]``. Issue targets: Adam-mini
state <= 0.51x AdamW's; GaLore at rank r equal to the closed form; SCALE only the last layer's
momentum (plus AdamW state for 1-D parameters). FRUGAL rows use density 0.25 (coordinates,
SVD basis or whole tensors); BlockLLM its official defaults (sparsity 0.9, embedding and head
frozen), so its peak memory also drops by the gradients it never computes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
from typing import Any

import torch
from torch import nn

import steepest

WIDTH, HEADS, VOCAB, SEQ = 768, 12, 50257, 64


class Block(nn.Module):
    """A pre-norm transformer block with separate q/k/v/o projections and a GELU MLP."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.ModuleDict({name: nn.Linear(width, width) for name in ("q_proj", "k_proj", "v_proj", "o_proj")})
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal self-attention then MLP, each with a residual."""
        h = self.ln_1(x)
        b, t, _ = h.shape
        q, k, v = (self.attn[n](h).view(b, t, HEADS, -1).transpose(1, 2) for n in ("q_proj", "k_proj", "v_proj"))
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1)
        x = x + self.attn["o_proj"](a)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2-small shaped language model (untied head)."""

    def __init__(self, layers: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, WIDTH)
        self.layers = nn.ModuleList(Block(WIDTH) for _ in range(layers))
        self.norm = nn.LayerNorm(WIDTH)
        self.lm_head = nn.Linear(WIDTH, VOCAB, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits for every position."""
        x = self.embed_tokens(tokens)
        for block in self.layers:
            x = block(x)
        return self.lm_head(self.norm(x))


def _optimizer(key: str, model: GPT) -> torch.optim.Optimizer:
    if key == "adam_mini":
        return steepest.AdamMini(model.named_parameters(), lr=1e-3, dim=WIDTH, n_heads=HEADS)
    if key.startswith("galore_adamw") or key == "fira":
        rank = int(key.rsplit("_r", 1)[1]) if "_r" in key else 128
        groups = steepest.lowrank_param_groups(model, rank=rank, scale=0.25)
        return (steepest.Fira if key == "fira" else steepest.GaLoreAdamW)(groups, lr=1e-2)
    if key == "scale":
        return steepest.SCALE(steepest.scale_param_groups(model, last_layer="lm_head"), lr=1e-3)
    if key.startswith("frugal"):
        # The block matrices (not the head) projected, as FRUGAL's prepare_proj_params does.
        proj_type = key.split("_", 1)[1] if "_" in key else "coord"
        groups, _ = steepest.optimizer_params("frugal", model, proj_type=proj_type, targets=("layers.",))
        return steepest.FRUGAL(groups, lr=1e-3)
    if key == "blockllm":
        # Official defaults: 10% of the tensors selected, embedding and head never (frozen).
        return steepest.BlockLLM(model.named_parameters(), lr=1e-3)
    return steepest.create_optimizer(key, model.parameters(), **steepest.optimizer_info(key).suggested)


def _run(key: str, layers: int, queue: Any) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = GPT(layers)
    opt = _optimizer(key, model)
    tokens = torch.randint(0, VOCAB, (1, SEQ))
    logits = model(tokens)
    loss = nn.functional.cross_entropy(logits.view(-1, VOCAB), tokens.view(-1))
    loss.backward()
    opt.step()
    queue.put(
        {
            "key": key,
            "params": sum(p.numel() for p in model.parameters()),
            "state_bytes": steepest.state_bytes(opt),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
    )


def measure(key: str, layers: int) -> dict[str, Any]:
    """Run one optimizer's step in a fresh process and return its figures."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_run, args=(key, layers, queue))
    process.start()
    result: dict[str, Any] = queue.get()
    process.join()
    return result


KEYS = (
    "adamw",
    "adam_mini",
    "scale",
    "galore_adamw_r128",
    "galore_adamw_r256",
    "fira",
    "frugal",
    "frugal_svd",
    "frugal_block",
    "blockllm",
    "lion",
)


def main(argv: list[str] | None = None) -> int:
    """Measure every optimizer and print the table (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    keys = args.only or list(KEYS)
    if "adamw" not in keys:
        keys = ["adamw", *keys]
    rows = [measure(k, args.layers) for k in keys]
    base = rows[0]
    print(f"# {base['params'] / 1e6:.1f}M parameters, float32, {args.layers} layers, batch 1 x {SEQ} tokens")
    print(f"{'optimizer':<20} {'state MB':>10} {'vs AdamW':>9} {'peak RSS MB':>12} {'vs AdamW':>9}")
    for row in rows:
        print(
            f"{row['key']:<20} {row['state_bytes'] / 1e6:>10.1f} {row['state_bytes'] / base['state_bytes']:>9.3f} "
            f"{row['peak_rss'] / 1e6:>12.0f} {row['peak_rss'] / base['peak_rss']:>9.3f}"
        )
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
