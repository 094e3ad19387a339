"""Curvature optimizers beyond the conformance matrix: graphs released, probes, refresh schedules, misuse."""

from __future__ import annotations

import copy
import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

import steepest
import steepest.optim._curvature_base as curvature_base
from steepest.optim import _estimators
from steepest.optim.adahessian import spatial_average
from steepest.optim.sophia import sampled_cross_entropy
from tests.optim.problems import SumOfQuadratics, make_closure, make_params

pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")

# -- no graph outlives a step -------------------------------------------------------------


class _Packed:
    """What the saved-tensor hook stores in the graph: alive exactly as long as the graph is."""

    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor


class GraphTracker:
    """Counts graph objects still alive: every tensor saved for backward is wrapped and weakly tracked."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref[_Packed]] = []

    def pack(self, tensor: Tensor) -> _Packed:
        packed = _Packed(tensor)
        self.refs.append(weakref.ref(packed))
        return packed

    @staticmethod
    def unpack(packed: _Packed) -> Tensor:
        return packed.tensor

    def hooks(self) -> Any:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    def alive(self) -> int:
        gc.collect()
        return sum(ref() is not None for ref in self.refs)


CREATE_GRAPH_KEYS = [
    k for k in steepest.list_optimizers() if steepest.optimizer_info(k).capabilities.needs_create_graph
]
_KWARGS = {"adahessian": {"lr": 0.05}, "sophia_h": {"lr": 0.05, "update_period": 2}, "newton_cg": {"lr": 1.0}}


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), Tensor))


def _leak_run(key: str, steps: int) -> tuple[int, list[int], bool]:
    """``steps`` steps as a user would drive them, never clearing the gradients.

    Returns the graph objects still alive at the end (from all steps), the live tensors after
    step 10 and after the last, and whether no ``p.grad`` ever kept a ``grad_fn`` after a step.
    """
    problem = SumOfQuadratics()
    params = make_params()
    opt = steepest.create_optimizer(key, params, **_KWARGS.get(key, {"lr": 0.01}))
    tracker = GraphTracker()
    closure = make_closure(params, lambda: problem.loss(params), create_graph=True)
    tensors, detached = [], True
    for step in range(1, steps + 1):
        with tracker.hooks():
            if opt.capabilities.requires_closure:  # type: ignore[attr-defined]
                opt.step(closure)
            else:
                loss = problem.loss(params)
                loss.backward(create_graph=True)
                del loss
                opt.step()
        detached &= all(p.grad is None or p.grad.grad_fn is None for p in params)
        if step in (10, steps):
            tensors.append(_live_tensors())
    return tracker.alive(), tensors, detached


def test_every_create_graph_optimizer_is_covered() -> None:
    assert set(CREATE_GRAPH_KEYS) == {"adahessian", "sophia_h", "newton_cg"}


@pytest.mark.parametrize("key", CREATE_GRAPH_KEYS)
def test_repeated_steps_do_not_keep_graphs_or_grow_memory(key: str) -> None:
    alive, tensors, detached = _leak_run(key, 50)
    assert detached, f"{key}: a p.grad kept its graph after step()"
    assert alive == 0, f"{key}: {alive} saved tensors of step graphs still alive after 50 steps"
    assert tensors[0] == tensors[1], f"{key}: live tensors grew from {tensors[0]} (step 10) to {tensors[1]} (step 50)"


def test_the_leak_check_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without releasing the graph, the double-backward cycle keeps the graphs alive."""
    monkeypatch.setattr(curvature_base, "release_graph", lambda params: None)
    alive, _, detached = _leak_run("adahessian", 10)
    assert alive > 0 and not detached


# -- misuse -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", CREATE_GRAPH_KEYS)
def test_gradients_without_graph_raise_and_change_nothing(key: str) -> None:
    problem = SumOfQuadratics()
    params = make_params()
    opt = steepest.create_optimizer(key, params, **_KWARGS[key])
    before = [p.detach().clone() for p in params]
    closure = make_closure(params, lambda: problem.loss(params), create_graph=False)
    with pytest.raises(RuntimeError, match="create_graph=True"):
        if opt.capabilities.requires_closure:  # type: ignore[attr-defined]
            opt.step(closure)
        else:
            with torch.enable_grad():
                closure()
            opt.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before, strict=True))
    assert not any(opt.state[p] for p in params)


def test_mfac_groups_must_share_window_and_damping() -> None:
    params = make_params()
    with pytest.raises(ValueError, match="ngrads"):
        steepest.MFAC([{"params": params[:2]}, {"params": params[2:], "ngrads": 3}], ngrads=4)
    with pytest.raises(ValueError, match="damp"):
        steepest.MFAC([{"params": params[:2]}, {"params": params[2:], "damp": 0.1}])


# -- probes -------------------------------------------------------------------------------


def test_rademacher_probes_are_signs_with_mean_zero() -> None:
    probe = _estimators.draw_probe(torch.empty(100_000, dtype=torch.float64), "rademacher", 7)
    assert set(probe.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(probe.mean())) < 4 / 100_000**0.5  # 4 standard deviations
    gaussian = _estimators.draw_probe(torch.empty(100_000), "gaussian", 7)
    assert abs(float(gaussian.mean())) < 4 / 100_000**0.5 and abs(float(gaussian.var()) - 1) < 0.03


def test_probe_streams_are_reproducible_and_distinct() -> None:
    like = torch.empty(64)
    seeds = {_estimators.probe_seed(s, t, i) for s in (0, 1) for t in (1, 2, 3) for i in (0, 1, 2)}
    assert len(seeds) == 18
    a = _estimators.draw_probe(like, "rademacher", _estimators.probe_seed(0, 5, 1))
    b = _estimators.draw_probe(like, "rademacher", _estimators.probe_seed(0, 5, 1))
    c = _estimators.draw_probe(like, "rademacher", _estimators.probe_seed(0, 6, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_hutchinson_diagonal_is_unbiased() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    hessian = a @ a.T - 2 * torch.eye(6, dtype=torch.float64)
    w = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(0.5 * w @ hessian @ w + w.sum(), w, create_graph=True)
    estimator = _estimators.Hutchinson("rademacher")
    draws = torch.stack([estimator.estimate([w], [g], seeds=[s])[0][0] for s in range(2000)])
    spread = draws.std(dim=0) / 2000**0.5
    assert bool(((draws.mean(dim=0) - hessian.diagonal()).abs() <= 4 * spread + 1e-12).all())


# -- AdaHessian spatial averaging ---------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_adahessian_averages_conv_kernels_over_space(dims: int, monkeypatch: pytest.MonkeyPatch) -> None:
    conv = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[dims](2, 3, 2, bias=False).double()
    x = torch.randn(2, 2, *([4] * dims), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def loss_of(kernel: Tensor) -> Tensor:
        conv_fn = getattr(torch.nn.functional, f"conv{dims}d")
        return torch.tanh(conv_fn(x, kernel)).pow(2).sum()

    recorded: list[Tensor] = []
    draw = curvature_base.draw_probe
    monkeypatch.setattr(curvature_base, "draw_probe", lambda *a: recorded.append(draw(*a)) or recorded[-1])
    kernel0 = conv.weight.detach().clone()
    opt = steepest.AdaHessian(conv.parameters(), betas=(0.9, 0.5))
    loss_of(conv.weight).backward(create_graph=True)
    opt.step()

    hessian = torch.autograd.functional.hessian(loss_of, kernel0, vectorize=True).reshape(kernel0.numel(), -1)
    hz = (hessian @ recorded[0].reshape(-1)).reshape(kernel0.shape).abs()
    spatial = tuple(range(2, 2 + dims))
    expected = hz.mean(dim=spatial, keepdim=True).expand_as(hz)
    v = opt.state[conv.weight]["exp_hessian_diag_sq"]
    torch.testing.assert_close(v, 0.5 * expected**2, rtol=1e-10, atol=1e-14)
    assert not torch.equal(expected, hz), "the averaging must change something on this kernel"


def test_spatial_average_keeps_matrices_and_can_be_disabled() -> None:
    hz = torch.arange(12.0).reshape(3, 4)
    assert torch.equal(spatial_average(hz), hz)
    kernel = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(spatial_average(kernel, average_kernels=False), kernel)
    assert torch.equal(spatial_average(kernel)[..., 0], kernel.mean(dim=2))


# -- Sophia refresh schedules -------------------------------------------------------------


def test_sophia_h_refreshes_every_k_steps_and_needs_no_graph_between(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = SumOfQuadratics()
    params = make_params()
    opt = steepest.SophiaH(params, lr=0.01, update_period=3)
    draws: list[int] = []
    draw = curvature_base.draw_probe
    monkeypatch.setattr(curvature_base, "draw_probe", lambda *a: draws.append(1) or draw(*a))
    refreshed = []
    for t in range(1, 8):
        before = len(draws)
        due = t % 3 == 1
        # Off-refresh steps accept plain gradients: no graph is needed there.
        closure = make_closure(params, lambda: problem.loss(params), create_graph=due)
        hessian_before = opt.state[params[0]]["hessian"].clone() if opt.state[params[0]] else None
        opt.step(closure)
        refreshed.append(len(draws) > before)
        if hessian_before is not None and not due:
            assert torch.equal(opt.state[params[0]]["hessian"], hessian_before)
    assert refreshed == [t % 3 == 1 for t in range(1, 8)]


def _sophia_g_loop(opt: steepest.SophiaG, model: torch.nn.Linear, start: int, steps: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 5, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    calls = []
    out = []
    for t in range(start, start + steps):

        def sampled(t: int = t) -> Tensor:
            calls.append(t)
            opt.zero_grad()
            loss = sampled_cross_entropy(model(x), torch.Generator().manual_seed(t))
            if torch.is_grad_enabled():
                loss.backward()
            return loss

        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step(hessian_closure=sampled)
        out.append(model.weight.detach().clone())
    assert calls == [t for t in range(start, start + steps) if t % opt.param_groups[0]["update_period"] == 0]
    return out


def test_sophia_g_refresh_schedule_and_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    opt = steepest.SophiaG(model.parameters(), lr=1e-2, update_period=3, bs=16)
    _sophia_g_loop(opt, model, 1, 6)
    assert all(p.grad is None for p in model.parameters()), "the GNB closure's gradients are cleared"
    assert bool((opt.state[model.weight]["hessian"] > 0).all())
    model_copy = copy.deepcopy(model)
    resumed = steepest.SophiaG(model_copy.parameters(), lr=1e-2, update_period=3, bs=16)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    expected = _sophia_g_loop(opt, model, 7, 6)
    actual = _sophia_g_loop(resumed, model_copy, 7, 6)
    assert all(torch.equal(e, a) for e, a in zip(expected, actual, strict=True))


def test_sophia_g_update_hessian_is_the_ema_of_squared_sampled_gradients() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = steepest.SophiaG([w], betas=(0.9, 0.75))
    w.grad = torch.tensor([2.0, 3.0])
    opt.update_hessian()
    torch.testing.assert_close(opt.state[w]["hessian"], torch.tensor([1.0, 2.25]))
    assert w.grad is not None, "without a closure the caller's gradients stay"


# -- NewtonCG -----------------------------------------------------------------------------


def _closure(opt: torch.optim.Optimizer, w: Tensor, f: Callable[[Tensor], Tensor]) -> Callable[[], Tensor]:
    def closure() -> Tensor:
        opt.zero_grad()
        loss = f(w)
        if torch.is_grad_enabled():
            loss.backward(create_graph=True)
        return loss

    return closure


def test_newton_cg_takes_a_negative_step_at_a_saddle_and_classic_does_not() -> None:
    def f(w: Tensor) -> Tensor:
        return w[0] ** 2 - w[1] ** 2 + w[1] ** 4 / 4

    for negative_steps in (True, False):
        w = torch.nn.Parameter(torch.tensor([0.3, 0.5], dtype=torch.float64))
        opt = steepest.NewtonCG([w], negative_steps=negative_steps)
        opt.step(_closure(opt, w, f))
        assert opt.last_info["negative_curvature"]
        assert (opt.last_info["step_size"] < 0) == negative_steps
        assert float(f(w.detach())) < float(f(torch.tensor([0.3, 0.5], dtype=torch.float64)))
