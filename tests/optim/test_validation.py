"""Hyperparameter validation: rules, signature coverage, and fuzzed constructor inputs."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import steepest
from steepest.optim._base import SteepestOptimizer
from steepest.optim._registry import REGISTRY
from steepest.optim._validation import Boolean, Interval, OneOf, Optional, Tuple
from tests.optim.optim_db import build
from tests.optim.problems import take_step

OURS = sorted(k for k, e in REGISTRY.items() if issubclass(e.cls, SteepestOptimizer))


def test_interval_rule() -> None:
    rule = Interval(0.0, 1.0, high_open=True)
    rule.check("X", "beta", 0.0)
    for bad in (1.0, -0.1, math.nan, math.inf, "0.5", True, None):
        with pytest.raises(ValueError, match=r"X: invalid beta="):
            rule.check("X", "beta", bad)


def test_composite_rules() -> None:
    Tuple(2, Interval(0.0, 1.0)).check("X", "betas", (0.1, 0.2))
    with pytest.raises(ValueError, match="betas"):
        Tuple(2, Interval(0.0, 1.0)).check("X", "betas", (0.1, 2.0))
    Optional(Interval(0.0)).check("X", "clamp", None)
    with pytest.raises(ValueError, match="clamp"):
        Optional(Interval(0.0)).check("X", "clamp", -1.0)
    with pytest.raises(ValueError, match="lr"):
        Interval(0.0).check("X", "lr", math.inf)
    OneOf(("l1", "l2")).check("X", "norm", "l1")
    with pytest.raises(ValueError, match="one of 'l1', 'l2'"):
        OneOf(("l1", "l2")).check("X", "norm", "l3")
    Boolean(allow_none=True).check("X", "foreach", None)
    with pytest.raises(ValueError, match="foreach"):
        Boolean().check("X", "foreach", 1)


def test_every_hyperparameter_needs_a_rule() -> None:
    with pytest.raises(TypeError, match="no validation rule"):

        class Broken(SteepestOptimizer):
            def __init__(self, params: Any, lr: float = 0.1, knob: float = 1.0, *, maximize: bool = False,
                         foreach: bool | None = None) -> None:
                super().__init__(params, lr=lr, knob=knob, maximize=maximize, foreach=foreach)

            def _single_tensor_update(self, group: Any, params: Any, grads: Any, states: Any) -> None:
                pass


def test_an_optimizer_needs_an_update_or_its_own_step() -> None:
    with pytest.raises(TypeError, match="must implement _single_tensor_update"):

        class NoUpdate(SteepestOptimizer):
            def __init__(self, params: Any, lr: float = 0.1, *, maximize: bool = False,
                         foreach: bool | None = None) -> None:
                super().__init__(params, lr=lr, maximize=maximize, foreach=foreach)

    class OwnStep(SteepestOptimizer):  # a step spanning all groups needs no per-tensor dispatch
        def __init__(self, params: Any, lr: float = 0.1, *, maximize: bool = False,
                     foreach: bool | None = None) -> None:
            super().__init__(params, lr=lr, maximize=maximize, foreach=foreach)

        def step(self, closure: Any = None) -> None:
            return None

    assert OwnStep([torch.nn.Parameter(torch.zeros(1))]).step() is None


def test_added_param_group_is_validated() -> None:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = steepest.Lion([a])
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [b], "lr": -0.5})
    assert len(opt.param_groups) == 1


def test_integer_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="floating point"):
        steepest.Lion([torch.zeros(3, dtype=torch.long)])


# Magnitudes are bounded: a finite but absurd lr (1e37) is a valid value whose step
# overflows float32 scalars inside torch, which is torch's error to give, not ours.
_values = st.one_of(
    st.floats(-1e6, 1e6),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(-3, 3),
    st.booleans(),
    st.none(),
    st.sampled_from(["l1", "l2", "linf", "global", "tensor", "bad"]),
    st.tuples(st.floats(-1, 2), st.floats(-1, 2)),
    st.tuples(st.floats(-1, 2), st.floats(-1, 2), st.floats(-1, 2)),
)


@pytest.mark.parametrize("key", OURS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_fuzzed_hyperparameters_raise_value_error_or_build(key: str, data: st.DataObject) -> None:
    entry = REGISTRY[key]
    names = sorted(entry.defaults())
    name = data.draw(st.sampled_from(names))
    value = data.draw(_values)
    param = torch.nn.Parameter(torch.ones(3))
    try:
        opt = build(key, [param], **{name: value})
    except ValueError as err:
        assert name in str(err)
        return
    # Accepted: the value satisfies the rule, and a step runs.
    rules = entry.cls._rules()  # type: ignore[attr-defined]
    rules[name].check(key, name, value)
    if opt.capabilities.gradient_free:  # type: ignore[attr-defined]
        opt.step(lambda: (param**2).sum())
        return
    if opt.capabilities.requires_closure or opt.capabilities.needs_create_graph:  # type: ignore[attr-defined]
        try:
            take_step(opt, [param], lambda: (param**2).sum())  # closure / create_graph as the contract says
        except ValueError as err:
            # SPS with maximize=True refuses, at the step, an objective above the maximum -f_star
            # (known only from the loss); nothing moved.
            assert key in ("sps", "sps_max") and "f_star" in str(err) and opt.param_groups[0]["maximize"]
            assert torch.equal(param.detach(), torch.ones(3))
        return
    param.grad = torch.ones(3)
    opt.step()
