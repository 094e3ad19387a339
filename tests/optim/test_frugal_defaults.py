"""FRUGAL's defaults are the paper's main method: blockwise selection in descending order (issue 23 item 15).

The official README launches ``block_adamw`` as ``frugal``, and its C4 pre-training scripts run
``--optimizer frugal --block_order descending --density 0.25 --update_gap 200 --reset_statistics
--inactive_update_rule sign_sgd --inactive_lr_scale 1.0``. The other subspaces (coordinates,
SVD, random block order) stay selectable.
"""

from __future__ import annotations

import torch
from torch import nn

import steepest
from steepest.optim.frugal import active_blocks


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),
                         nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    model(torch.randn(4, 6)).square().mean().backward()
    opt.step()


def test_defaults_are_the_pretraining_scripts() -> None:
    defaults = steepest.optimizer_info("frugal").defaults()
    scripts = {
        "block_order": "descending",
        "density": 0.25,
        "update_gap": 200,
        "reset_statistics": True,
        "inactive_update_rule": "sign_sgd",
        "inactive_lr_scale": 1.0,
        "proj_params_lr_scale": 1.0,
        "eps": 1e-8,
        "betas": (0.9, 0.999),
        "lr": 1e-3,
    }
    assert {k: defaults[k] for k in scripts} == scripts


def test_a_default_block_group_walks_from_the_last_tensor_backwards() -> None:
    """Four tensors at density 0.25: one state-full at a time, the last first, then the one before it."""
    params = [nn.Parameter(torch.randn(3, 2)) for _ in range(4)]
    opt = steepest.FRUGAL([{"params": params, "proj_type": "block"}], update_gap=2)
    assert opt.param_groups[0]["block_order"] == "descending"
    full = []
    for _ in range(10):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        full.append([i for i, p in enumerate(params) if "exp_avg" in opt.state[p]])
    assert full == [[3], [3], [2], [2], [1], [1], [0], [0], [3], [3]]


def test_the_old_random_order_is_still_selectable_and_seeded() -> None:
    group = {"params": [torch.zeros(1)] * 8, "density": 0.25, "block_order": "random", "seed": 0}
    draws = [active_blocks(group, r) for r in range(6)]
    assert draws == [active_blocks(group, r) for r in range(6)]  # reproducible from the seed
    assert all(len(d) == 2 for d in draws)
    descending = [active_blocks({**group, "block_order": "descending"}, r) for r in range(6)]
    assert descending == [{7, 6}, {5, 4}, {3, 2}, {1, 0}, {7, 6}, {5, 4}]
    assert draws != descending
    model = _mlp()
    params, extra = steepest.optimizer_params("frugal", model, proj_type="block")
    opt = steepest.create_optimizer("frugal", params, block_order="random", **extra)
    _step(model, opt)
    assert all(g["block_order"] == "random" for g in opt.param_groups)


def test_the_old_coordinate_columns_are_still_selectable() -> None:
    model = _mlp()
    params, extra = steepest.optimizer_params("frugal", model, proj_type="coord")
    opt = steepest.create_optimizer("frugal", params, **extra)
    _step(model, opt)
    weight = model[0].weight  # (8, 6): int(0.25 * 6) = 1 column
    assert opt.param_groups[1]["coord_choice"] == "columns"
    assert opt.state[weight]["exp_avg"].shape == (8, 1) and opt.state[weight]["indices"].shape == (1,)


def test_optimizer_params_builds_the_blockwise_method_by_default() -> None:
    """The public path: the four hidden weight matrices in a block group, the last of them state-full first."""
    model = _mlp()
    params, extra = steepest.optimizer_params("frugal", model)
    opt = steepest.create_optimizer("frugal", params, **extra)
    projected = next(g for g in opt.param_groups if g["proj_type"] != "none")
    assert projected["proj_type"] == "block" and projected["block_order"] == "descending"
    hidden = [model[i].weight for i in (0, 2, 4, 6)]
    assert [id(p) for p in projected["params"]] == [id(p) for p in hidden]
    _step(model, opt)
    assert ["exp_avg" in opt.state[p] for p in hidden] == [False, False, False, True]
