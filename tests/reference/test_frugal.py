"""FRUGAL (coordinate, SVD and block variants) against float64 transcriptions of the official rules (no oracle on PyPI).

The transcription follows the author's initial commit c7ebe4c (``CoordAdamW`` on the
``ProjOptimizer`` mixin): decoupled decay at the base lr on every parameter, then for a
projected tensor Adam (eps form B) on the gathered coordinates at ``lr * proj_params_lr_scale``
scattered back, plus ``-lr * pls * ils * sign(G - scatter(G_S))`` on the rest. Given the
same selection (read from our state after each step), the updates must agree.
"""

from __future__ import annotations

import copy
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


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((6, 4), {"density": 0.5, "update_gap": 3}),
        ((3, 8), {"density": 0.34, "update_gap": 2, "inactive_update_rule": "sgd", "weight_decay": 0.1}),
        ((6, 5), {"density": 0.4, "update_gap": 4, "reset_statistics": False, "inactive_lr_scale": 0.1}),
    ],
)
def test_frugal_svd_matches_transcription(shape: tuple[int, int], kwargs: dict) -> None:
    """The official GaloreAdamW rule: SVD basis of G on the smaller side, Adam on the projection, sign of the rest."""
    lr, (b1, b2), eps = 0.01, (0.9, 0.999), 1e-8
    wd, ils = kwargs.get("weight_decay", 0.0), kwargs.get("inactive_lr_scale", 1.0)
    rule, reset, gap = kwargs.get("inactive_update_rule", "sign_sgd"), kwargs.get("reset_statistics", True), kwargs[
        "update_gap"
    ]
    m_, n_ = shape
    rank = round(kwargs["density"] * min(shape))
    gen = torch.Generator().manual_seed(1)
    w = nn.Parameter(torch.randn(*shape, generator=gen, dtype=torch.float64))
    ref = w.detach().clone()
    opt = steepest.FRUGAL([{"params": [w], "proj_type": "svd"}], lr=lr, **{"weight_decay": wd, **kwargs})
    m = v = basis = None
    t = 0
    for step in range(12):
        g = torch.randn(*shape, generator=gen, dtype=torch.float64)
        w.grad = g.clone()
        opt.step()
        if t % gap == 0 or (not reset and step % gap == 0):
            u, _, vh = torch.linalg.svd(g, full_matrices=False)
            basis = vh[:rank] if m_ >= n_ else u[:, :rank]
            if reset or m is None:
                m = v = None
                t = 0
        assert basis is not None

        def down(x: torch.Tensor, basis: torch.Tensor = basis) -> torch.Tensor:
            return x @ basis.T if m_ >= n_ else basis.T @ x

        def up(x: torch.Tensor, basis: torch.Tensor = basis) -> torch.Tensor:
            return x @ basis if m_ >= n_ else basis @ x

        low = down(g)
        if m is None:
            m, v = torch.zeros_like(low), torch.zeros_like(low)
        t += 1
        ref.mul_(1 - lr * wd)
        m = b1 * m + (1 - b1) * low
        v = b2 * v + (1 - b2) * low * low
        adam = (m / (1 - b1**t)) / (v.sqrt() / math.sqrt(1 - b2**t) + eps)
        residual = g - up(low)
        upd = -lr * up(adam)
        if rule == "sign_sgd":
            upd = upd - lr * ils * residual.sign()
        elif rule == "sgd":
            upd = upd - lr * ils * residual
        ref.add_(upd)
        # Singular vectors are unique up to sign; the update is invariant to it.
        torch.testing.assert_close(w.detach(), ref, rtol=1e-10, atol=1e-12, msg=f"step {step + 1}")


def _check_block_against_transcription(
    sizes: list[tuple[int, ...]], steps: int, order: str, ours: dict, *, lr: float, wd: float, gap: int, density: float
) -> None:
    """Our ``proj_type="block"`` group built with ``ours`` against the official BlockAdamW rule for ``order``.

    The transcription keeps the official ``next_block_start`` walk (start at the first tensor for
    ``ascending``/``mirror``, the last for ``descending``; move by the number of state-full
    tensors after each refresh), fresh moments for the state-full tensors at each refresh, and
    ``-lr * sign(G)`` for the others.
    """
    b1, b2, eps = 0.9, 0.999, 1e-8
    count = len(sizes)
    n_active = round(count * density)
    gen = torch.Generator().manual_seed(2)
    params = [nn.Parameter(torch.randn(*s, generator=gen, dtype=torch.float64)) for s in sizes]
    refs = [p.detach().clone() for p in params]
    opt = steepest.FRUGAL([{"params": params, "proj_type": "block"}], **ours)
    moments: dict[int, list[torch.Tensor]] = {}
    adam_steps: dict[int, int] = {}
    start = {"ascending": 0, "descending": count - 1, "mirror": 0}[order]
    active: set[int] = set()
    for step in range(steps):
        grads = [torch.randn(*s, generator=gen, dtype=torch.float64) for s in sizes]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        if step % gap == 0:
            if order == "ascending":
                active = {(start + j) % count for j in range(n_active)}
                start = (start + n_active) % count
            elif order == "descending":
                active = {(start - j) % count for j in range(n_active)}
                start = (start - n_active) % count
            else:
                half = count // 2
                picked = [(start + j) % half for j in range(n_active // 2)]
                active = set(picked) | {count - 1 - i for i in picked}
                start = (start + n_active // 2) % half
            moments = {i: [torch.zeros(sizes[i], dtype=torch.float64)] * 2 for i in active}
            adam_steps = dict.fromkeys(active, 0)
        for i, (ref, g) in enumerate(zip(refs, grads, strict=True)):
            ref.mul_(1 - lr * wd)
            if i in active:
                adam_steps[i] += 1
                k = adam_steps[i]
                m, v = moments[i]
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                moments[i] = [m, v]
                ref.add_(-lr * (m / (1 - b1**k)) / (v.sqrt() / math.sqrt(1 - b2**k) + eps))
            else:
                ref.add_(-lr * g.sign())
        for i, (p, ref) in enumerate(zip(params, refs, strict=True)):
            assert ("exp_avg" in opt.state[p]) == (i in active), f"step {step + 1}, tensor {i}"
            torch.testing.assert_close(p.detach(), ref, rtol=1e-12, atol=1e-13, msg=f"step {step + 1}, tensor {i}")


@pytest.mark.parametrize("order", ["ascending", "descending", "mirror", None])
def test_frugal_block_matches_transcription(order: str | None) -> None:
    """The official BlockAdamW rule with its deterministic block orders; None: the default order, descending."""
    lr, wd, gap, density = 0.02, 0.05, 3, 0.4
    ours = {"lr": lr, "weight_decay": wd, "update_gap": gap, "density": density}
    if order is not None:
        ours["block_order"] = order
    sizes = [(3, 2), (4,), (2, 2), (5,), (3,)]
    _check_block_against_transcription(
        sizes, 13, order or "descending", ours, lr=lr, wd=wd, gap=gap, density=density
    )


def test_frugal_block_at_the_defaults_matches_the_pretraining_scripts() -> None:
    """Every FRUGAL default in a block group against the official pre-training scripts' settings.

    Those are block_order descending, density 0.25, update_gap 200, reset_statistics, sign_sgd at
    inactive_lr_scale 1.0, eps 1e-8, betas (0.9, 0.999); here at the class's lr and weight decay,
    over three refreshes of eight tensors (two state-full at a time).
    """
    sizes = [(3, 2), (4,), (2, 2), (5,), (3,), (2, 3), (2,), (4, 1)]
    _check_block_against_transcription(sizes, 401, "descending", {}, lr=1e-3, wd=0.01, gap=200, density=0.25)


def test_frugal_block_state_is_only_for_active_tensors_and_round_trips() -> None:
    gen = torch.Generator().manual_seed(3)
    sizes = [(8, 8)] * 4
    params = [nn.Parameter(torch.randn(*s, generator=gen)) for s in sizes]
    opt = steepest.FRUGAL([{"params": params, "proj_type": "block"}], update_gap=2, density=0.5, seed=1)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    # Two of four tensors state-full: 2 x 64 floats of moments each, plus step and count for all.
    assert steepest.state_bytes(opt) == 2 * 2 * 64 * 4 + 4 * 2 * 4
    saved = copy.deepcopy(opt.state_dict())  # torch's state_dict shares the live tensors
    clone = [nn.Parameter(p.detach().clone()) for p in params]
    opt2 = steepest.FRUGAL([{"params": clone, "proj_type": "block"}], update_gap=2, density=0.5, seed=1)
    opt2.load_state_dict(saved)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen) for p in params]
        for p, q, g in zip(params, clone, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        opt2.step()
    for p, q in zip(params, clone, strict=True):
        assert torch.equal(p, q)
