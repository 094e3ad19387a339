"""A small attention/MLP-shaped model and a step-by-step comparison for GaLore and Fira.

The model has ``nn.Linear`` weights named ``*attn*`` and ``*mlp*`` in both orientations
(tall: m >= n, so 'std' projects on the right; wide: m < n, projected on the left), plus
biases and a ``head`` that stay plain. Both optimizers train their own copy of the model
on the same fixed batch, so the comparison is of the whole trajectory.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn


class TinyBlock(nn.Module):
    """attn.q (12x8, tall), attn.o (8x12, wide), mlp.up (16x8, tall), mlp.down (8x16, wide), head (3x8)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.ModuleDict({"q": nn.Linear(8, 12), "o": nn.Linear(12, 8)})
        self.mlp = nn.ModuleDict({"up": nn.Linear(8, 16), "down": nn.Linear(16, 8)})
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.attn["o"](torch.tanh(self.attn["q"](x)))
        h = h + self.mlp["down"](torch.relu(self.mlp["up"](h)))
        return self.head(h)


#: AdamW settings every low-rank oracle comparison runs under.
ADAMW_SETTINGS = [
    pytest.param({"lr": 1e-2}, id="lr"),
    pytest.param({"lr": 1e-2, "weight_decay": 0.1, "betas": (0.8, 0.99), "eps": 1e-8}, id="wd"),
    pytest.param({"lr": 3e-3, "correct_bias": False}, id="no-bias-correction"),
]

def make_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> TinyBlock:
    """The model with deterministic weights."""
    torch.manual_seed(seed)
    return TinyBlock().to(dtype)


def batch(dtype: torch.dtype = torch.float32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed regression batch of 64 examples."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 8, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(64, 3, generator=gen, dtype=torch.float64).to(dtype)
    return x, y


def compare(
    make_ours: Callable[[nn.Module], torch.optim.Optimizer],
    make_theirs: Callable[[nn.Module], torch.optim.Optimizer],
    *,
    steps: int = 40,
    rtol: float,
    atol: float,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Train two copies of :func:`make_model` side by side; assert every parameter at every step.

    Returns the largest absolute difference seen; raises ``AssertionError`` at the first step
    where a parameter differs by more than ``atol + rtol * |theirs|``.
    """
    ours_model = make_model(dtype)
    theirs_model = copy.deepcopy(ours_model)
    ours, theirs = make_ours(ours_model), make_theirs(theirs_model)
    x, y = batch(dtype)
    worst = 0.0
    for step in range(steps):
        for model, opt in ((ours_model, ours), (theirs_model, theirs)):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        for (name, a), b in zip(ours_model.named_parameters(), theirs_model.parameters(), strict=True):
            diff = (a.detach() - b.detach()).abs()
            worst = max(worst, float(diff.max()))
            limit = atol + rtol * b.detach().abs()
            if not bool((diff <= limit).all()):
                raise AssertionError(
                    f"step {step + 1}, {name}: max abs diff {float(diff.max()):.3e} exceeds atol={atol} rtol={rtol}"
                )
    return worst


def official_groups(model: nn.Module, scale_key: str, **options: Any) -> list[dict[str, Any]]:
    """The official codes' param groups (plain first, then the projected attn/mlp weights)."""
    projected = [
        m.weight for name, m in model.named_modules() if isinstance(m, nn.Linear) and ("attn" in name or "mlp" in name)
    ]
    ids = {id(p) for p in projected}
    options = dict(options)
    options[scale_key] = options.pop("scale", 1.0)
    return [{"params": [p for p in model.parameters() if id(p) not in ids]}, {"params": projected, **options}]
