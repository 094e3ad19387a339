"""``steepest.param_groups`` and ``optimizer_params(weight_decay=...)``: decay/no-decay groups for every optimizer.

Also: ``optimizer_params`` refuses keywords it would ignore, and the projected groups it builds
leave ``scale``/``proj_type`` to the constructor (issue 23 item 12).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import steepest
from steepest.optim._param_groups import no_decay_names
from steepest.optim._registry import REGISTRY
from tests.optim.problems import take_step
from tests.optim.test_model_params import TinyTransformerish, _batch

WD = 0.5


def _loss_fn(model: nn.Module):  # type: ignore[no-untyped-def]
    tokens, targets = _batch()

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())

    return loss


def test_default_rule_exempts_biases_norms_and_vectors() -> None:
    model = TinyTransformerish()
    exempt = no_decay_names(model)
    assert exempt == {"mlp.0.bias", "mlp.2.bias", "norm.weight", "norm.bias"}
    groups = steepest.param_groups(model, weight_decay=WD)
    assert [g["weight_decay"] for g in groups] == [WD, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    named = steepest.param_groups(model, weight_decay=WD, named=True)
    assert {n for n, _ in named[1]["params"]} == exempt


def test_custom_rules_and_bad_input() -> None:
    model = TinyTransformerish()
    by_words = steepest.param_groups(model, weight_decay=WD, no_decay=("embed", "bias"))
    assert {id(p) for p in by_words[1]["params"]} == {
        id(p) for n, p in model.named_parameters() if "embed" in n or "bias" in n
    }
    by_predicate = steepest.param_groups(model, weight_decay=WD, no_decay=lambda n, p: p.dim() < 2)
    assert len(by_predicate[1]["params"]) == 4
    with pytest.raises(ValueError, match="not one string"):
        steepest.param_groups(model, weight_decay=WD, no_decay="bias")
    with pytest.raises(ValueError, match="weight_decay"):
        steepest.param_groups(model, weight_decay=-1.0)


def test_hugging_face_style_custom_norm_classes_are_exempt() -> None:
    class LlamaRMSNorm(nn.Module):  # a 1-D gain, as in transformers; recognised by its class name
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4, 4))  # 2-D on purpose: the class name alone decides

    model = nn.ModuleDict({"proj": nn.Linear(4, 4, bias=False), "input_layernorm": LlamaRMSNorm()})
    assert no_decay_names(model) == {"input_layernorm.weight"}


@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_every_optimizer_takes_decay_groups_or_refuses_them(key: str) -> None:
    torch.manual_seed(0)
    model = TinyTransformerish()
    entry = REGISTRY[key]
    if "weight_decay" not in entry.defaults():
        with pytest.raises(ValueError, match="no weight_decay"):
            steepest.optimizer_params(key, model, weight_decay=WD, **model.facts)
        return
    params, extra = steepest.optimizer_params(key, model, weight_decay=WD, **model.facts)
    opt = steepest.create_optimizer(key, params, **{**entry.suggested, "weight_decay": 0.0, **extra})
    exempt = {id(p) for n, p in model.named_parameters() if n in no_decay_names(model)}
    for group in opt.param_groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= exempt or not ids & exempt, "a group mixes decayed and exempt parameters"
        assert group["weight_decay"] == (0.0 if ids <= exempt else WD)
    handed = [p for g in opt.param_groups for p in g["params"]]
    assert sorted(map(id, handed)) == sorted(id(p) for p in model.parameters())
    plain, _ = steepest.optimizer_params(key, model, **model.facts)
    if isinstance(plain, list) and isinstance(plain[0], dict):  # projected groups stay projected, SCALE's roles stay
        structure = [{k: v for k, v in g.items() if k != "params"} for g in plain]
        for group in params:
            assert {k: v for k, v in group.items() if k not in ("params", "weight_decay")} in structure
    loss_fn = _loss_fn(model)
    initial = float(loss_fn().detach())
    for _ in range(5):
        take_step(opt, list(model.parameters()), loss_fn)
    assert float(loss_fn().detach()) < initial


def test_decay_reaches_only_the_decayed_group() -> None:
    """With zero gradients, AdamW's decoupled decay alone moves the weights: exempt ones stay put."""
    model = TinyTransformerish()
    opt = steepest.AdamW(steepest.param_groups(model, weight_decay=WD), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        if n in no_decay_names(model):
            assert torch.equal(p, before[n]), n
        else:
            torch.testing.assert_close(p, before[n] * (1 - 0.1 * WD))


@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_optimizer_params_refuses_unknown_and_misplaced_keywords(key: str) -> None:
    model = TinyTransformerish()
    with pytest.raises(ValueError, match="unknown keyword"):
        steepest.optimizer_params(key, model, rnak=4)
    if key not in ("galore_adamw", "fira"):
        with pytest.raises(ValueError, match="would be ignored"):
            steepest.optimizer_params(key, model, rank=4)
    with pytest.raises(ValueError, match="needs weight_decay"):
        steepest.optimizer_params(key, model, no_decay=("bias",))
    # Facts that describe the model are accepted by every optimizer (the benchmark passes them to all).
    steepest.optimizer_params(key, model, dim=16, n_heads=2)


@pytest.mark.parametrize("key", ["galore_adamw", "fira"])
def test_scale_and_proj_type_given_to_create_optimizer_reach_the_projected_group(key: str) -> None:
    """Issue 23 item 12: the registry's scale=0.25 used to be overwritten by the group's 1.0."""
    torch.manual_seed(0)
    model = TinyTransformerish()
    twin = TinyTransformerish()
    twin.load_state_dict(model.state_dict())
    params, extra = steepest.optimizer_params(key, model, rank=2)
    opt = steepest.create_optimizer(key, params, lr=1e-2, scale=0.25, proj_type="reverse_std", **extra)
    projected = next(g for g in opt.param_groups if g["rank"] is not None)
    assert projected["scale"] == 0.25 and projected["proj_type"] == "reverse_std"
    # The same optimizer with scale and proj_type written into the group by hand: the same trajectory.
    by_hand, _ = steepest.optimizer_params(key, twin, rank=2)
    by_hand[1].update(scale=0.25, proj_type="reverse_std")
    reference = REGISTRY[key].cls(by_hand, lr=1e-2)
    for m, o in ((model, opt), (twin, reference)):
        for _ in range(3):
            take_step(o, list(m.parameters()), _loss_fn(m))
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
