"""Per-group settings are honoured or refused, never accepted and ignored.

SLS, PoNoS, SPS, multidimensional backtracking and Newton-CG run one search (or one Polyak
step, one CG solve) over all param groups, so every setting but ``lr`` is optimizer-wide: a
second group with another value raises ``ValueError`` naming the key (construction,
``add_param_group`` and ``load_state_dict``). Sophia-G's ``update_period`` is honoured per group.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import steepest
from steepest.optim._registry import REGISTRY
from steepest.optim.sophia import sampled_cross_entropy
from tests.optim.problems import SumOfQuadratics, make_closure, make_params

OPTIMIZER_WIDE = ("sls", "sls_adam", "ponos", "sps", "sps_max", "mdb", "newton_cg")
#: A valid value other than the default, where halving or flipping the default does not give one.
SPECIAL = {"reset_option": 2, "line_search": "goldstein", "set": "box", "c2": 0.5}


def _alternative(key: str, default: Any) -> Any:
    if key in SPECIAL:
        return SPECIAL[key]
    if key == "direction":
        return "adam" if default == "sgd" else "sgd"
    if isinstance(default, bool):
        return not default
    if default is None:
        return False if key == "foreach" else 1.0
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return 0.5 * default if default != 0.0 else 0.5
    return None


def _optimizer_wide_keys(key: str) -> list[tuple[str, Any]]:
    defaults = REGISTRY[key].defaults()
    pairs = []
    for name, default in defaults.items():
        if name == "lr":
            continue
        value = _alternative(name, default)
        assert value is not None and value != default, (key, name)
        pairs.append((name, value))
    return pairs


def _cases() -> list[Any]:
    return [pytest.param(key, name, value, id=f"{key}-{name}") for key in OPTIMIZER_WIDE
            for name, value in _optimizer_wide_keys(key)]


def _two_groups() -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    params = make_params()
    return params[:2], params[2:]


@pytest.mark.parametrize(("key", "name", "value"), _cases())
def test_a_second_group_with_another_setting_is_refused(key: str, name: str, value: Any) -> None:
    first, second = _two_groups()
    # The value itself is fine: every group may take it.
    steepest.create_optimizer(key, [{"params": first, name: value}, {"params": second, name: value}])
    with pytest.raises(ValueError, match=rf"{name}=.*optimizer-wide"):
        steepest.create_optimizer(key, [{"params": first}, {"params": second, name: value}])
    # A group left at the constructor's value differs from a first group that set its own.
    with pytest.raises(ValueError, match=rf"{name}=.*optimizer-wide"):
        steepest.create_optimizer(key, [{"params": first, name: value}, {"params": second}])
    opt = steepest.create_optimizer(key, first)
    with pytest.raises(ValueError, match=rf"{name}=.*optimizer-wide"):
        opt.add_param_group({"params": second, name: value})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": second})  # the constructor's value: the same as the first group's
    assert len(opt.param_groups) == 2


@pytest.mark.parametrize("key", OPTIMIZER_WIDE)
def test_groups_may_differ_in_lr(key: str) -> None:
    first, second = _two_groups()
    lr = REGISTRY[key].defaults()["lr"]
    opt = steepest.create_optimizer(key, [{"params": first}, {"params": second, "lr": 0.5 * lr}])
    assert [g["lr"] for g in opt.param_groups] == [lr, 0.5 * lr]


@pytest.mark.parametrize("key", OPTIMIZER_WIDE)
def test_a_state_dict_with_differing_group_settings_is_refused(key: str) -> None:
    problem = SumOfQuadratics()
    first, second = _two_groups()
    params = [*first, *second]
    opt = steepest.create_optimizer(key, [{"params": first}, {"params": second}])
    caps = opt.capabilities  # type: ignore[attr-defined]
    opt.step(make_closure(params, lambda: problem.loss(params), create_graph=caps.needs_create_graph))
    name, value = _optimizer_wide_keys(key)[0]
    saved = opt.state_dict()
    saved["param_groups"][1][name] = value
    before = opt.state_dict()
    with pytest.raises(ValueError, match=rf"load_state_dict.*{name}=.*optimizer-wide"):
        opt.load_state_dict(saved)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for i, entry in before["state"].items():
        for k, v in entry.items():
            torch.testing.assert_close(after["state"][i][k], v, rtol=0, atol=0)


def _sophia_g_groups(periods: tuple[int, int]) -> tuple[steepest.SophiaG, torch.nn.Linear, torch.nn.Linear]:
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(3, 3)
    groups = [
        {"params": a.parameters(), "update_period": periods[0]},
        {"params": b.parameters(), "update_period": periods[1]},
    ]
    opt = steepest.SophiaG(groups, lr=1e-3)
    return opt, a, b


def test_sophia_g_refreshes_each_group_on_its_own_period() -> None:
    opt, a, b = _sophia_g_groups((3, 1))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))

    def sampled() -> torch.Tensor:
        opt.zero_grad()
        loss = sampled_cross_entropy(b(a(x)))
        if torch.is_grad_enabled():
            loss.backward()
        return loss

    refreshed = []
    for _ in range(6):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(b(a(x)), y).backward()
        weights = (a.weight, b.weight)
        before = [opt.state[p]["hessian"].clone() if opt.state.get(p) else torch.zeros_like(p) for p in weights]
        opt.step(hessian_closure=sampled)
        after = [opt.state[p]["hessian"] for p in weights]
        refreshed.append(tuple(not torch.equal(h, g) for h, g in zip(before, after, strict=True)))
    # group 0 (k=3) after steps 3 and 6; group 1 (k=1) after every step
    assert refreshed == [(False, True), (False, True), (True, True), (False, True), (False, True), (True, True)]
