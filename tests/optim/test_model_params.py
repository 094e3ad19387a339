"""``steepest.optimizer_params``: every registered optimizer builds from a model and trains it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import steepest
from steepest.optim._model_params import default_rank, last_linear_name
from steepest.optim._registry import REGISTRY
from tests.optim.problems import take_step


class TinyTransformerish(nn.Module):
    """An embedding, one attention-like block with Adam-mini's names, an MLP, a norm and a head."""

    def __init__(self, vocab: int = 11, dim: int = 16, n_heads: int = 2) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.facts = {"dim": dim, "n_heads": n_heads}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(tokens)
        q, k, v = self.q_proj(h), self.k_proj(h), self.v_proj(h)
        attn = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        h = h + self.o_proj(attn @ v)
        h = h + self.mlp(self.norm(h))
        return self.lm_head(h)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 11, (4, 6), generator=gen)
    return tokens, torch.roll(tokens, -1, dims=1)


@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_every_optimizer_builds_from_a_model_and_lowers_the_loss(key: str) -> None:
    torch.manual_seed(0)
    model = TinyTransformerish()
    tokens, targets = _batch()
    params, extra = steepest.optimizer_params(key, model, **model.facts)
    hyperparameters: dict[str, Any] = {**REGISTRY[key].suggested, **extra}
    opt = steepest.create_optimizer(key, params, **hyperparameters)
    every = list(model.parameters())

    def loss_fn() -> torch.Tensor:
        return nn.functional.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())

    initial = float(loss_fn().detach())
    for _ in range(20):
        take_step(opt, every, loss_fn)
    assert float(loss_fn().detach()) < initial
    # Every trainable parameter is handed to the optimizer exactly once.
    handed = [p for g in opt.param_groups for p in g["params"]]
    assert sorted(map(id, handed)) == sorted(map(id, every))


def test_projection_groups_leave_out_the_last_layer_and_1d_parameters() -> None:
    model = TinyTransformerish()
    groups, _ = steepest.optimizer_params("galore_adamw", model)
    projected = next(g for g in groups if "rank" in g)["params"]
    assert all(p.ndim == 2 for p in projected)
    assert not any(p is model.lm_head.weight for p in projected)
    assert any(p is model.q_proj.weight for p in projected)
    assert projected and len(projected) == 6
    assert next(g for g in groups if "rank" in g)["rank"] == default_rank(model, {}) == 4


def test_facts_override_the_defaults() -> None:
    model = TinyTransformerish()
    groups, _ = steepest.optimizer_params("fira", model, rank=3, targets=("q_proj", "k_proj"))
    lowrank = next(g for g in groups if "rank" in g)
    assert lowrank["rank"] == 3 and len(lowrank["params"]) == 2
    _, extra = steepest.optimizer_params("adam_mini", model, dim=16, n_heads=2, n_kv_heads=None)
    assert extra == {"dim": 16, "n_heads": 2}


def test_a_model_without_linear_layers_gets_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        last_linear_name(nn.Conv1d(2, 2, 3))
