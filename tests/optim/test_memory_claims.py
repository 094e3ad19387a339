"""Memory claims in exact bytes: GaLore's state at rank r equals its closed form.

For a projected ``m x n`` weight (``proj_type="std"``) GaLore keeps the two Adam moments of the
projected gradient, ``r x max(m, n)`` each, the basis, ``r x min(m, n)``, and a step counter;
every other parameter keeps AdamW state (two moments like it, and a step). Fira adds one scalar
(the norm-growth limiter's previous norm) per projected weight.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import steepest

FLOAT = 4  # bytes of a float32


class TinyGPT(nn.Module):
    """Embedding, two blocks of attention / MLP linears (tall and wide), norms, head."""

    def __init__(self, width: int = 12, vocab: int = 20) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "attn": nn.Linear(width, 3 * width),
                    "attn_out": nn.Linear(width, width),
                    "mlp_up": nn.Linear(width, 4 * width),
                    "mlp_down": nn.Linear(4 * width, width),
                    "norm": nn.LayerNorm(width),
                }
            )
            for _ in range(2)
        )
        self.head = nn.Linear(width, vocab, bias=False)


def _closed_form(model: nn.Module, rank: int, extra_per_projected: int = 0) -> int:
    projected = {
        id(m.weight)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and any(t in name for t in ("attn", "mlp"))
    }
    total = 0
    for p in model.parameters():
        total += FLOAT  # step
        if id(p) in projected:
            m, n = p.shape
            total += FLOAT * (2 * rank * max(m, n) + rank * min(m, n)) + extra_per_projected
        else:
            total += FLOAT * 2 * p.numel()
    return total


@pytest.mark.parametrize("rank", [2, 5])
@pytest.mark.parametrize("cls", [steepest.GaLoreAdamW, steepest.Fira])
def test_lowrank_state_bytes_equal_the_closed_form(cls: type, rank: int) -> None:
    torch.manual_seed(0)
    model = TinyGPT()
    opt = cls(steepest.lowrank_param_groups(model, rank=rank), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    extra = FLOAT if cls is steepest.Fira else 0
    assert steepest.state_bytes(opt) == _closed_form(model, rank, extra)
    adamw = torch.optim.AdamW(model.parameters())
    adamw.step()
    assert steepest.state_bytes(opt) < steepest.state_bytes(adamw)
