"""BlockLLM behaviour the conformance matrix does not reach: selection, probes, freezing, checkpoints."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import steepest


def _selection(state_dict: dict) -> dict:  # type: ignore[type-arg]
    """BlockLLM's optimizer-wide selection inside a state dict (first param group, ``"blockllm"``)."""
    return state_dict["param_groups"][0]["blockllm"]  # type: ignore[no-any-return]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8), nn.Linear(8, 10))


def _named(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(("embed." if n.startswith("0.") else "") + n, p) for n, p in model.named_parameters()]


def _loss(model: nn.Module, t: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(t)
    tokens = torch.randint(0, 10, (16,), generator=gen)
    # The labels drift with t so the loss can rise and trigger re-selection.
    return nn.functional.cross_entropy(model(tokens), (tokens + t // 5) % 10)


def _closure(opt: torch.optim.Optimizer, model: nn.Module, t: int):  # type: ignore[no-untyped-def]
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _loss(model, t)
        if torch.is_grad_enabled():
            loss.backward()
        return loss

    return closure


def test_state_and_gradients_only_for_the_selected_block() -> None:
    model = _model()
    opt = steepest.BlockLLM(_named(model), sparsity=0.5, num_probes=0)
    selected = [p for n, p in _named(model) if n in opt.selected_names()]
    assert selected and all(not n.startswith("embed") for n in opt.selected_names())
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in selected}
    opt.step(_closure(opt, model, 0))
    assert all(p.grad is None for p in model.parameters() if id(p) not in {id(q) for q in selected})
    expected = sum(2 * p.numel() * 4 + 4 for p in selected)  # two float32 moments and a step each
    assert steepest.state_bytes(opt) == expected
    total_adamw = sum(2 * p.numel() * 4 + 4 for p in model.parameters())
    assert steepest.state_bytes(opt) < 0.6 * total_adamw


def test_probes_get_gradients_but_no_update() -> None:
    model = _model()
    opt = steepest.BlockLLM(_named(model), sparsity=0.5, num_probes=1, probe_interval=1)
    opt.step(_closure(opt, model, 0))
    probe = [(n, p) for n, p in _named(model) if p.requires_grad and n not in opt.selected_names()]
    assert len(probe) == 1
    name, param = probe[0]
    before = param.detach().clone()
    opt.step(_closure(opt, model, 1))
    assert torch.equal(param.detach(), before), f"probe {name} moved"
    assert not opt.state[param]
    norms = _selection(opt.state_dict())["grad_norms"]
    assert int((~torch.isnan(norms)).sum()) >= len(opt.selected_names()) + 1


def test_without_freezing_every_tensor_gets_a_gradient_and_only_the_selected_move() -> None:
    model = _model()
    opt = steepest.BlockLLM(_named(model), sparsity=0.5, freeze_unselected=False, num_probes=0)
    before = {n: p.detach().clone() for n, p in _named(model)}
    opt.step(_closure(opt, model, 0))
    for n, p in _named(model):
        assert p.grad is not None
        assert torch.equal(p.detach(), before[n]) != (n in opt.selected_names()), n


def test_rising_loss_triggers_reselection_and_resets_state() -> None:
    model = _model()
    opt = steepest.BlockLLM(_named(model), sparsity=0.5, update_freq=5, patience=2, num_probes=1, probe_interval=1)
    selections = [tuple(opt.selected_names())]
    for t in range(60):
        opt.step(_closure(opt, model, t))
        if tuple(opt.selected_names()) != selections[-1]:
            selections.append(tuple(opt.selected_names()))
            # A new block starts a new Adam: no state survives the re-selection.
            assert not any(opt.state[p] for p in model.parameters())
    assert len(selections) >= 2
    visits = _selection(opt.state_dict())["visits"]
    assert float(visits.sum()) == pytest.approx(1.0)  # frequencies, renormalised at every visit
    eligible = [not n.startswith("embed") for n, _ in _named(model)]
    assert all((float(v) > 0) == e for v, e in zip(visits, eligible, strict=True))


def test_falling_loss_keeps_the_selection() -> None:
    model = _model()
    opt = steepest.BlockLLM(_named(model), sparsity=0.5, update_freq=5, patience=2, num_probes=0)
    first = opt.selected_names()
    for _ in range(30):
        opt.record_loss(1.0 / (1 + _selection(opt.state_dict())["count"].item()))
        opt.zero_grad()
        _loss(model, 0).backward()
        opt.step()
    assert opt.selected_names() == first


def test_state_dict_round_trip_across_reselections_continues_bitwise() -> None:
    kwargs = {"sparsity": 0.5, "update_freq": 4, "patience": 2, "num_probes": 1, "probe_interval": 3}
    model = _model()
    opt = steepest.BlockLLM(_named(model), **kwargs)
    for t in range(13):
        opt.step(_closure(opt, model, t))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    for t in range(13, 40):
        opt.step(_closure(opt, model, t))
    expected = [p.detach().clone() for p in model.parameters()]

    resumed = _model()
    resumed.load_state_dict(saved_model)
    opt2 = steepest.BlockLLM(_named(resumed), **kwargs)
    opt2.load_state_dict(saved_opt)
    assert [p.requires_grad for p in resumed.parameters()] == flags
    for t in range(13, 40):
        opt2.step(_closure(opt2, resumed, t))
    for e, a in zip(expected, resumed.parameters(), strict=True):
        assert torch.equal(e, a.detach())


def test_corrupt_selection_raises_before_touching_anything() -> None:
    model = _model()
    opt = steepest.BlockLLM(_named(model), sparsity=0.5, num_probes=0)
    opt.step(_closure(opt, model, 0))
    good = copy.deepcopy(opt.state_dict())
    snapshot = copy.deepcopy(_selection(opt.state_dict()))
    excluded = copy.deepcopy(good)
    _selection(excluded)["selected"][0] = True  # the embedding
    flipped = copy.deepcopy(good)
    _selection(flipped)["selected"] = ~_selection(flipped)["selected"] & opt._eligible
    wrong_dtype = copy.deepcopy(good)
    _selection(wrong_dtype)["visits"] = _selection(wrong_dtype)["visits"].float()
    missing = copy.deepcopy(good)
    del missing["param_groups"][0]["blockllm"]
    for bad, match in (
        (excluded, "excluded"),
        (flipped, "not selected"),
        (wrong_dtype, "visits"),
        (missing, "blockllm"),
    ):
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict(bad)
        after = _selection(opt.state_dict())
        for k, v in snapshot.items():
            torch.testing.assert_close(after[k], v, rtol=0, atol=0, equal_nan=True, msg=k)


def test_no_recorded_loss_warns_once() -> None:
    model = _model()
    opt = steepest.BlockLLM(_named(model), sparsity=0.5, update_freq=2, num_probes=0)
    with pytest.warns(UserWarning, match="record_loss"):
        for _ in range(4):
            opt.zero_grad()
            _loss(model, 0).backward()
            opt.step()


def test_names_are_required_and_selection_settings_are_optimizer_wide() -> None:
    model = _model()
    with pytest.raises(ValueError, match="needs parameter names"):
        steepest.BlockLLM(list(model.parameters()))
    named = _named(model)
    with pytest.raises(ValueError, match="optimizer-wide"):
        steepest.BlockLLM([{"params": named[:2]}, {"params": named[2:], "sparsity": 0.2}])


def test_reselection_scores_penalise_frequent_visits() -> None:
    # Equal gradient norms: the tensor visited less often wins the single slot.
    a, b = nn.Parameter(torch.ones(4)), nn.Parameter(torch.ones(4))
    opt = steepest.BlockLLM([("a", a), ("b", b)], sparsity=0.5, update_freq=1, patience=1, num_probes=0,
                            freeze_unselected=False, exclude=())
    assert len(opt.selected_names()) == 1
    # The official start: frequency 1/n for every eligible tensor, the first selection no visit.
    assert _selection(opt.state_dict())["visits"].tolist() == [0.5, 0.5]
    chosen = []
    for loss in (1.0, 2.0, 3.0, 4.0):  # rising: re-selections after the 2nd and the 4th step
        opt.record_loss(loss)
        a.grad, b.grad = torch.ones(4), torch.ones(4)
        opt.step()
        chosen.append(opt.selected_names())
    # A tie at the first re-selection (equal norms and frequencies) goes to parameter order:
    # "a", then f = (1.5, 0.5) / 2. At the second, "b" scores exp(-0.25/4) > exp(-0.75/4).
    assert chosen[1] == ["a"] and chosen[3] == ["b"]
    visits = _selection(opt.state_dict())["visits"].tolist()
    assert all(math.isclose(v, e, rel_tol=1e-15) for v, e in zip(visits, [0.375, 0.625], strict=True))


def test_reselection_tops_up_with_unseen_tensors_to_the_budget() -> None:
    """Few tensors had gradients: the official rule adds random unseen ones until the budget is reached.

    16 tensors of 4 entries, sparsity 0.5: the budget is int(0.5 * 64) = 32 entries. Only three
    tensors ever get a gradient, so the three scored ones (12 entries) all fit and five unseen
    ones are added (12 + 5 * 4 = 32, the fifth reaching the budget): 8 tensors, not 3.
    """
    params = [nn.Parameter(torch.randn(4, generator=torch.Generator().manual_seed(i))) for i in range(16)]
    named = [(f"layers.{i}.weight", p) for i, p in enumerate(params)]
    opt = steepest.BlockLLM(named, sparsity=0.5, update_freq=2, patience=1, num_probes=0,
                            freeze_unselected=False, exclude=(), seed=1)
    seen = [0, 5, 9]
    for loss in (1.0, 2.0):  # rising: re-selection after the second step
        opt.record_loss(loss)
        for i, p in enumerate(params):
            p.grad = torch.full_like(p, float(i + 1)) if i in seen else None
        opt.step()
    selected = [int(name.split(".")[1]) for name in opt.selected_names()]
    assert len(selected) == 8
    assert set(seen) <= set(selected)
    assert 4 * len(selected) >= 32 > 4 * (len(selected) - 1)
    # The draw is seeded: the same run picks the same unseen tensors.
    again = steepest.BlockLLM([(n, nn.Parameter(p.detach().clone())) for n, p in named], sparsity=0.5,
                              update_freq=2, patience=1, num_probes=0, freeze_unselected=False, exclude=(), seed=1)
    for loss in (1.0, 2.0):
        again.record_loss(loss)
        for i, p in enumerate(again.param_groups[0]["params"]):
            p.grad = torch.full_like(p, float(i + 1)) if i in seen else None
        again.step()
    assert again.selected_names() == opt.selected_names()


def test_reselection_without_a_fitting_gap_adds_nothing_unseen() -> None:
    """When the scored tensors reach the budget themselves, no unseen tensor is added (as the official)."""
    params = [nn.Parameter(torch.ones(4)) for _ in range(4)]
    opt = steepest.BlockLLM([(f"l{i}", p) for i, p in enumerate(params)], sparsity=0.5, update_freq=2,
                            patience=1, num_probes=0, freeze_unselected=False, exclude=())
    for loss in (1.0, 2.0):
        opt.record_loss(loss)
        for i, p in enumerate(params):
            p.grad = torch.full_like(p, 1.0 + i) if i < 3 else None  # l3 never seen
        opt.step()
    # budget 8: l2 (4 entries) fits, l1 reaches 8 and is not added; the search stops there.
    assert opt.selected_names() == ["l2"]
