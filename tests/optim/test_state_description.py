"""The one-line state description is derived from the declared state, for every registry entry (issue 23 item 18).

``steepest info NAME`` used to read ``param_state`` / ``scalar_state`` only, so the optimizers that
declare their state through :meth:`state_shapes` were reported as keeping nothing. Each test here
builds the optimizer on the same sample model as :func:`describe_state`, takes one real step, and
compares what the step left in ``optimizer.state`` with the description.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import Tensor

import steepest
from steepest.optim import REGISTRY
from steepest.optim import _state_description as sd
from steepest.optim._state_description import _sample_closure, _SampleModel, _shape_text, describe_state

KEYS = sorted(REGISTRY)


def _stepped(key: str) -> torch.optim.Optimizer:
    """The optimizer ``key`` on the sample model as ``optimizer_params`` prepares it, after one real step."""
    model = _SampleModel()
    params, extra = steepest.optimizer_params(key, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Adam-mini's partition notes and similar advice
        opt = steepest.create_optimizer(key, params, **extra)
    caps = REGISTRY[key].capabilities
    closure = _sample_closure(model, opt, caps.needs_create_graph)

    if caps.requires_closure or caps.gradient_free:
        opt.step(closure)
    else:
        with torch.enable_grad():
            closure()
        opt.step()
    return opt


def _tensor_keys(opt: torch.optim.Optimizer) -> set[str]:
    return {k for state in opt.state.values() for k, v in state.items() if isinstance(v, Tensor)}


def _names(text: str, key: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(key)}(?!\w)", text) is not None


@pytest.mark.parametrize("key", KEYS)
def test_the_description_names_every_entry_a_step_creates(key: str) -> None:
    text = describe_state(key)
    keys = _tensor_keys(_stepped(key))
    if not keys:
        assert text == "none"
        return
    assert text != "none"
    missing = sorted(k for k in keys if not _names(text, k))
    assert not missing, f"{key}: {text!r} does not name {missing}"


def test_steepest_info_names_every_state_entry() -> None:
    """What ``steepest info`` prints (``RegistryEntry.state_description``) names every entry a step creates."""
    wrong = {}
    for key in KEYS:
        text = REGISTRY[key].state_description()
        keys = _tensor_keys(_stepped(key))
        missing = sorted(k for k in keys if not _names(text, k))
        if missing or (keys and text == "none"):
            wrong[key] = missing
    assert not wrong


@pytest.mark.parametrize("key", [k for k in KEYS if sd._declares_by_attributes(REGISTRY[k].cls)])
def test_the_class_attribute_shortcut_matches_building_the_optimizer(key: str) -> None:
    """Optimizers declaring their state by ``param_state``/``scalar_state`` are described without being built."""
    cls = REGISTRY[key].cls
    built = sd._built_state(key, cls, {})
    assert built is not None
    assert sd._render(sd._attribute_state(cls)) == sd._render(built)


def test_boolean_hyperparameters_that_add_state_are_named() -> None:
    assert describe_state("adamw").endswith("max_exp_avg_sq (like the parameter) with amsgrad=True")
    assert "max_exp_avg_var (like the parameter) with amsgrad=True" in describe_state("adabelief")


def test_shapes_are_said_relative_to_the_parameter() -> None:
    w, b = torch.zeros(16, 12), torch.zeros(16)
    assert _shape_text((16, 12), w, {}) == "like the parameter"
    assert _shape_text((), w, {}) == "scalar"
    assert _shape_text((3, 12), w, {3: "rank"}) == "rank x cols"
    assert _shape_text((16, 3), w, {3: "rank"}) == "rows x rank"
    assert _shape_text((64, 16, 12), w, {64: "ngrads"}) == "ngrads copies of the parameter"
    assert _shape_text((64, 64), w, {64: "ngrads"}) == "ngrads x ngrads"
    assert _shape_text((3,), b, {}) == "3 entries"
    # Projected matrices and the rest are told apart.
    text = describe_state("galore_adamw")
    assert text.startswith("weight matrices: ") and "proj_right (rank x cols)" in text
    assert "other tensors: step (scalar), exp_avg, exp_avg_sq (like the parameter)" in text


def test_a_selection_is_described_as_one() -> None:
    """BlockLLM keeps Adam state for the tensors it selected, whatever their kind."""
    assert describe_state("blockllm").endswith("for some tensors, none for the others")


def test_classes_outside_the_registry() -> None:
    # A torch optimizer without declared state: described from what one step leaves.
    text = describe_state(torch.optim.Adam)
    assert all(_names(text, k) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert "max_exp_avg_sq (like the parameter) with amsgrad=True" in text

    # A user's subclass is prepared as its registered parent.
    class MyFRUGAL(steepest.FRUGAL):
        pass

    assert describe_state(MyFRUGAL) == describe_state("frugal") == describe_state(steepest.FRUGAL)
    with pytest.raises(KeyError, match="unknown optimizer"):
        describe_state("adam_typo")


def test_describing_leaves_the_global_generator_alone() -> None:
    before = torch.get_rng_state()
    describe_state("frugal")
    describe_state("mezo")
    assert torch.equal(torch.get_rng_state(), before)
