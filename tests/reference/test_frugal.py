"""FRUGAL (coordinate variant) against a float64 transcription of the official rule (no oracle on PyPI).

The transcription follows the author's initial commit c7ebe4c (``CoordAdamW`` on the
``ProjOptimizer`` mixin): decoupled decay at the base lr on every parameter, then for a
projected tensor Adam (eps form B) on the gathered coordinates at ``lr * proj_params_lr_scale``
scattered back, plus ``-lr * pls * ils * sign(G - scatter(G_S))`` on the rest. Given the
same selection (read from our state after each step), the updates must agree.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import steepest
from tests.reference._compare import assert_same_trajectory


def _gather(g: torch.Tensor, idx: torch.Tensor, choice: str) -> torch.Tensor:
    if choice == "columns":
        return g[:, idx]
    if choice == "rows":
        return g[idx, :]
    return g.flatten()[idx]


def _scatter(values: torch.Tensor, idx: torch.Tensor, choice: str, shape: torch.Size) -> torch.Tensor:
    out = torch.zeros(shape, dtype=torch.float64)
    if choice == "columns":
        out[:, idx] = values
    elif choice == "rows":
        out[idx, :] = values
    else:
        out.view(-1)[idx] = values
    return out


@pytest.mark.parametrize(
    "kwargs",
    [
        {"coord_choice": "columns", "density": 0.5, "update_gap": 3},
        {"coord_choice": "rows", "density": 0.4, "update_gap": 2, "inactive_update_rule": "sgd", "weight_decay": 0.1},
        {"coord_choice": "randk", "density": 0.3, "update_gap": 4, "reset_statistics": False, "inactive_lr_scale": 0.1},
        {"coord_choice": "columns", "density": 0.25, "update_gap": 2, "inactive_update_rule": "no",
         "proj_params_lr_scale": 0.25},
    ],
)
def test_frugal_coord_matches_transcription(kwargs: dict) -> None:
    lr, (b1, b2), eps = 0.01, (0.9, 0.999), 1e-8
    wd = kwargs.get("weight_decay", 0.0)
    pls, ils = kwargs.get("proj_params_lr_scale", 1.0), kwargs.get("inactive_lr_scale", 1.0)
    rule, choice = kwargs.get("inactive_update_rule", "sign_sgd"), kwargs["coord_choice"]
    reset, gap = kwargs.get("reset_statistics", True), kwargs["update_gap"]
    gen = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(5, 6, generator=gen, dtype=torch.float64))
    ref = w.detach().clone()
    opt = steepest.FRUGAL([{"params": [w], "proj_type": "coord"}], lr=lr, **{"weight_decay": wd, **kwargs})
    m = v = None
    t = 0
    prev_idx = None
    for step in range(12):
        g = torch.randn(5, 6, generator=gen, dtype=torch.float64)
        w.grad = g.clone()
        opt.step()
        idx = opt.state[w]["indices"].clone()
        if step % gap == 0:
            # a redraw: the official code re-zeroes the projected states (reset_statistics)
            if reset or m is None:
                m = v = None
                t = 0
        else:
            assert prev_idx is not None and torch.equal(idx, prev_idx)
        prev_idx = idx
        gs = _gather(g, idx, choice)
        if m is None:
            m, v = torch.zeros_like(gs), torch.zeros_like(gs)
        t += 1
        ref.mul_(1 - lr * wd)
        m = b1 * m + (1 - b1) * gs
        v = b2 * v + (1 - b2) * gs * gs
        adam = (m / (1 - b1**t)) / (v.sqrt() / math.sqrt(1 - b2**t) + eps)
        upd = -lr * pls * _scatter(adam, idx, choice, g.shape)
        residual = g - _scatter(gs, idx, choice, g.shape)
        if rule == "sign_sgd":
            upd = upd - lr * pls * ils * residual.sign()
        elif rule == "sgd":
            upd = upd - lr * pls * ils * residual
        ref.add_(upd)
        torch.testing.assert_close(w.detach(), ref, rtol=1e-12, atol=1e-13, msg=f"step {step + 1}")


def test_frugal_draws_are_seeded_and_refreshed() -> None:
    def indices(seed: int) -> list[list[int]]:
        w = nn.Parameter(torch.zeros(4, 16))
        opt = steepest.FRUGAL([{"params": [w], "proj_type": "coord"}], update_gap=2, seed=seed)
        out = []
        for _ in range(6):
            w.grad = torch.ones(4, 16)
            opt.step()
            out.append(opt.state[w]["indices"].tolist())
        return out

    a, b, c = indices(0), indices(0), indices(1)
    assert a == b and a != c
    assert a[0] == a[1] and a[2] == a[3] and a[0] != a[2]
    assert all(len(x) == 4 for x in a)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_frugal_state_full_part_is_adamw_at_density_one(foreach: bool, wd: float) -> None:
    """density=1: every column is state-full, the remainder is zero, so FRUGAL is torch's AdamW."""

    def ours(params: list) -> torch.optim.Optimizer:
        matrices = [p for p in params if p.ndim == 2]
        rest = [p for p in params if p.ndim != 2]
        groups = [{"params": matrices, "proj_type": "coord", "density": 1.0, "update_gap": 1000}, {"params": rest}]
        return steepest.FRUGAL(groups, lr=0.01, weight_decay=wd, foreach=foreach)

    assert_same_trajectory(
        ours,
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=wd, foreach=False),
        steps=40,
        rtol=1e-11,
        atol=1e-13,
    )


def test_frugal_state_bytes_are_the_subspace() -> None:
    w = nn.Parameter(torch.zeros(8, 16))
    b = nn.Parameter(torch.zeros(8))
    opt = steepest.FRUGAL([{"params": [w], "proj_type": "coord"}, {"params": [b]}])
    w.grad, b.grad = torch.ones(8, 16), torch.ones(8)
    opt.step()
    # w: 4 of 16 columns -> two (8, 4) float32 moments (256 B), 4 int64 indices (32 B), step + count (8 B);
    # b: AdamW, two (8,) moments (64 B) + step (4 B). AdamW on w would keep 1028 B.
    assert steepest.state_bytes(opt) == 256 + 32 + 8 + 64 + 4
