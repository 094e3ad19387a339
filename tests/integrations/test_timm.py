"""steepest in timm's real optimizer registry (``timm.optim.create_optimizer_v2``).

timm needs torchvision, which does not import beside the CPU torch of the default environment:
these run under ``-m timm`` in an environment with torch 2.14.1 and torchvision 0.29.1 (deselected
by default; imports of timm happen inside the tests so collection works without it).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import steepest
from steepest.integrations.timm import register, timm_name
from steepest.optim._registry import REGISTRY

pytestmark = pytest.mark.timm

#: Registered optimizers that need names or structured groups from the model (given through param_group_fn).
STRUCTURED = {"adam_mini", "blockllm", "galore_adamw", "fira", "frugal", "scale"}


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))


def test_names_are_unambiguous_for_timms_parser() -> None:
    import timm.optim

    names = register()
    assert names and all("_" not in n and n.startswith("steepest") for n in names)
    assert set(names) <= set(timm.optim.list_optimizers())
    assert register() == names  # registering again replaces the entries with equal ones
    # What the helper avoids: timm keeps the part after the last "_", so this is timm's own Lion.
    plain = timm.optim.create_optimizer_v2(model(), "steepest_lion", lr=1e-4)
    assert not isinstance(plain, steepest.Lion)


def test_only_optimizers_taking_weight_decay_are_registered() -> None:
    names = set(register())
    for key, entry in REGISTRY.items():
        assert (timm_name(key) in names) == ("weight_decay" in entry.defaults()), key


@pytest.mark.parametrize("key", [k for k, e in REGISTRY.items() if "weight_decay" in e.defaults()])
def test_create_optimizer_v2_builds_steepests_class(key: str) -> None:
    import timm.optim

    register()
    net = model()
    extra: dict[str, Any] = {}
    if key in STRUCTURED:
        extra["param_group_fn"] = lambda m: steepest.optimizer_params(key, m, weight_decay=0.05)[0]
    opt = timm.optim.create_optimizer_v2(net, timm_name(key), lr=1e-3, weight_decay=0.05, **extra)
    assert type(opt) is REGISTRY[key].cls
    # timm's (or steepest's) decay split: the LayerNorm and biases undecayed, the matrices at 0.05.
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    assert {id(p) for p in net.parameters() if p.dim() == 2} == decayed


def test_a_timm_built_lion_trains_and_lookahead_wraps_it() -> None:
    import timm.optim

    register()
    net = model()
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    y = x.sum(dim=1, keepdim=True)
    opt = timm.optim.create_optimizer_v2(net, "lookahead_steepestlion", lr=1e-3, weight_decay=0.01)
    assert isinstance(opt._base_optimizer, steepest.Lion)
    initial = float(nn.functional.mse_loss(net(x), y))
    for _ in range(20):
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    assert float(nn.functional.mse_loss(net(x), y)) < initial
