"""Tier A: one behavioural matrix over every registry entry (torch's OptimizerInfo idea).

Each test runs for every registered optimizer and, where it matters, every hyperparameter
variant in ``optim_db``. A new optimizer gets all of it by registering and adding a DB entry.
"""

from __future__ import annotations

import copy
import io
import math
from typing import Any

import pytest
import torch

import steepest
from steepest.optim._base import SteepestOptimizer
from steepest.optim._registry import REGISTRY
from tests.optim.optim_db import DB, OptimSpec, build
from tests.optim.problems import (
    LogisticRegression,
    Quadratic,
    SumOfQuadratics,
    make_closure,
    make_params,
    run_steps,
    take_step,
)

KEYS = sorted(REGISTRY)


def _variants() -> list[Any]:
    return [
        pytest.param(key, i, id=f"{key}-v{i}") for key in KEYS if key in DB for i in range(len(DB[key].variants))
    ]


def _spec(key: str) -> OptimSpec:
    return DB[key]


def _build(key: str, params: Any, **overrides: Any) -> torch.optim.Optimizer:
    return build(key, params, **overrides)


def _state_snapshot(opt: torch.optim.Optimizer) -> dict[int, dict[str, Any]]:
    snapshot = {}
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        snapshot[i] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[p].items()}
    return snapshot


def _assert_same_state(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]) -> None:
    assert a.keys() == b.keys()
    for i in a:
        assert a[i].keys() == b[i].keys(), i
        for k in a[i]:
            if isinstance(a[i][k], torch.Tensor):
                assert torch.equal(a[i][k], b[i][k]), (i, k)
            else:
                assert a[i][k] == b[i][k], (i, k)


def test_db_covers_registry() -> None:
    assert set(DB) == set(REGISTRY), "every registry entry needs an optim_db entry and vice versa"


@pytest.mark.parametrize("key", KEYS)
def test_registry_entry_is_complete(key: str) -> None:
    entry = steepest.optimizer_info(key)
    assert entry.cls.__doc__ and len(entry.cls.__doc__) > 80
    assert entry.paper.title and entry.paper.year > 1900
    assert entry.update_rule and entry.families
    assert "lr" in entry.defaults()
    assert getattr(steepest, entry.cls.__name__) is entry.cls
    assert set(entry.search_space) <= set(entry.defaults())
    assert "lr" in entry.suggested and set(entry.suggested) <= set(entry.defaults())


@pytest.mark.parametrize(("key", "variant"), _variants())
@pytest.mark.parametrize("maximize", [False, True])
def test_first_step_descends(key: str, variant: int, maximize: bool) -> None:
    problem = SumOfQuadratics()
    params = make_params()
    kwargs = {**_spec(key).variants[variant], "maximize": maximize}
    kwargs["weight_decay"] = 0.0 if "weight_decay" in REGISTRY[key].defaults() else None
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    opt = _build(key, params, **kwargs)
    before = [p.detach().clone() for p in params]
    sign = -1.0 if maximize else 1.0
    with torch.enable_grad():
        make_closure(params, lambda: problem.loss(params), sign=sign)()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]  # frozen: no grad
    take_step(opt, params, lambda: problem.loss(params), sign=sign)
    inner = sum(((p.detach() - b) * g).sum() for p, b, g in zip(params, before, grads, strict=True))
    assert float(inner) > 0 if maximize else float(inner) < 0


@pytest.mark.parametrize("key", KEYS)
def test_converges_on_quadratic(key: str) -> None:
    spec = _spec(key)
    problem = Quadratic()
    x = torch.nn.Parameter(torch.zeros(problem.dim, dtype=torch.float64))
    opt = _build(key, [x], **spec.quadratic)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.steps)
    initial = float(problem.loss(x.detach()))
    for _ in range(spec.steps):
        take_step(opt, [x], lambda: problem.loss(x))
        sched.step()
    final = float(problem.loss(x.detach()))
    assert math.isfinite(final)
    assert final <= 1e-2 * initial, f"{key}: loss {final:.3g} from {initial:.3g}"


@pytest.mark.parametrize("key", KEYS)
def test_converges_on_logistic_regression(key: str) -> None:
    spec = _spec(key)
    problem = LogisticRegression()
    optimum = problem.optimum()
    w = torch.nn.Parameter(torch.zeros(problem.dim, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
    opt = _build(key, [w, b], **spec.logistic)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.steps)
    initial = float(problem.loss(w.detach(), b.detach()))
    for _ in range(spec.steps):
        take_step(opt, [w, b], lambda: problem.loss(w, b))
        sched.step()
    gap = float(problem.loss(w.detach(), b.detach())) - optimum
    assert gap <= 2e-2 * (initial - optimum), f"{key}: gap {gap:.3g} from {initial - optimum:.3g}"


@pytest.mark.parametrize(("key", "variant"), _variants())
@pytest.mark.parametrize("via", ["deepcopy", "torch.save"])
def test_state_dict_round_trip_continues_bitwise(key: str, variant: int, via: str) -> None:
    problem = SumOfQuadratics()
    kwargs = _spec(key).variants[variant]
    params = make_params()
    opt = _build(key, params, **kwargs)
    run_steps(opt, params, lambda: problem.loss(params), 4)

    saved_params = [p.detach().clone() for p in params]
    state = opt.state_dict()
    if via == "deepcopy":
        state = copy.deepcopy(state)
    else:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)

    expected = run_steps(opt, params, lambda: problem.loss(params), 4)

    resumed_params = [torch.nn.Parameter(p.clone()) for p in saved_params]
    resumed = _build(key, resumed_params, **kwargs)
    resumed.load_state_dict(state)
    actual = run_steps(resumed, resumed_params, lambda: problem.loss(resumed_params), 4)
    for step_expected, step_actual in zip(expected, actual, strict=True):
        for e, a in zip(step_expected, step_actual, strict=True):
            assert torch.equal(e, a)


@pytest.mark.parametrize(
    ("key", "variant"),
    [v for v in _variants() if issubclass(REGISTRY[v.values[0]].cls, SteepestOptimizer)],
)
def test_init_state_creates_the_state_of_a_first_step(key: str, variant: int) -> None:
    """``init_state()`` (for torch.distributed.checkpoint) makes the state a step makes, without a step."""
    problem = SumOfQuadratics()
    kwargs = _spec(key).variants[variant]
    params = make_params()
    stepped = _build(key, params, **kwargs)
    run_steps(stepped, params, lambda: problem.loss(params), 1)
    fresh_params = make_params()
    before = [p.detach().clone() for p in fresh_params]
    fresh = _build(key, fresh_params, **kwargs)
    fresh.init_state()
    assert all(torch.equal(p.detach(), b) for p, b in zip(fresh_params, before, strict=True)), "init_state stepped"
    # Empty entries (a stateless update touched the parameter) hold nothing to checkpoint.
    got = {i: entry for i, entry in fresh.state_dict()["state"].items() if entry}
    want = {i: entry for i, entry in stepped.state_dict()["state"].items() if entry}
    assert got.keys() == want.keys(), key
    for index in want:
        assert got[index].keys() == want[index].keys(), (key, index)
        for name, value in want[index].items():
            if isinstance(value, torch.Tensor):
                assert (got[index][name].shape, got[index][name].dtype) == (value.shape, value.dtype), (index, name)
    fresh.load_state_dict(stepped.state_dict())  # a checkpoint loads over the initial state
    snapshot = _state_snapshot(fresh)
    fresh.init_state()  # existing state is left alone
    _assert_same_state(snapshot, _state_snapshot(fresh))


def _assert_foreach_matches_per_tensor(key: str, kwargs: dict[str, Any], steps: int = 6) -> None:
    """Per-tensor and foreach runs from the same start, parameter 0 without a gradient at step 2."""
    problem = SumOfQuadratics()
    trajectories = []
    for foreach in (False, True):
        params = make_params(torch.float64)
        opt = _build(key, params, **kwargs, foreach=foreach)
        trajectory = []
        for step in range(steps):
            # A parameter without a gradient in the middle of the run.
            _step_without(opt, params, problem, (0,) if step == 2 else ())
            trajectory.append([p.detach().clone() for p in params])
        trajectories.append(trajectory)
    for single, multi in zip(*trajectories, strict=True):
        for s, m in zip(single, multi, strict=True):
            torch.testing.assert_close(m, s, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("key", "variant"), _variants())
def test_foreach_matches_per_tensor(key: str, variant: int) -> None:
    _assert_foreach_matches_per_tensor(key, _spec(key).variants[variant])


def test_foreach_chunks_are_byte_bounded_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from steepest.optim import _base

    monkeypatch.setattr(_base, "FOREACH_CPU_CHUNK_BYTES", 100)
    tensors = [torch.zeros(n) for n in (10, 10, 30, 5, 5, 5)]  # 40, 40, 120, 20, 20, 20 bytes
    states: list[dict[str, Any]] = [{} for _ in tensors]
    chunks = _base.foreach_chunks(tensors, tensors, states)
    assert [[t.numel() for t in params] for params, _, _ in chunks] == [[10, 10], [30], [5, 5, 5]]
    assert all(len(p) == len(g) == len(st) for p, g, st in chunks)
    meta = [torch.zeros(40, device="meta") for _ in range(3)]  # not CPU: one chunk
    assert len(_base.foreach_chunks(meta, meta, [{} for _ in meta])) == 1


@pytest.mark.parametrize("key", KEYS)
def test_foreach_in_chunks_matches_per_tensor(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU foreach path split into chunks (every tensor its own here) keeps the trajectory."""
    from steepest.optim import _base

    monkeypatch.setattr(_base, "FOREACH_CPU_CHUNK_BYTES", 1)
    _assert_foreach_matches_per_tensor(key, _spec(key).variants[0], steps=4)


@pytest.mark.parametrize("key", KEYS)
def test_lr_zero_group_does_not_move(key: str) -> None:
    problem = SumOfQuadratics()
    params = make_params()
    kwargs = _spec(key).variants[-1]
    opt = _build(key, [{"params": params[:2], "lr": 0.0}, {"params": params[2:]}], **kwargs)
    frozen = [p.detach().clone() for p in params[:2]]
    moving = [p.detach().clone() for p in params[2:]]
    run_steps(opt, params, lambda: problem.loss(params), 3)
    if not _spec(key).moves_with_lr_zero:
        for p, f in zip(params[:2], frozen, strict=True):
            assert torch.equal(p.detach(), f)
    assert any(not torch.equal(p.detach(), m) for p, m in zip(params[2:], moving, strict=True) if p.numel())


@pytest.mark.parametrize("key", KEYS)
def test_lr_scheduler_drives_the_step(key: str) -> None:
    problem = SumOfQuadratics()
    params = make_params()
    opt = _build(key, params, **_spec(key).variants[0])
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 if epoch < 3 else 0.0)
    for _ in range(3):
        take_step(opt, params, lambda: problem.loss(params))
        scheduler.step()
    assert opt.param_groups[0]["lr"] == 0.0
    frozen = [p.detach().clone() for p in params]
    take_step(opt, params, lambda: problem.loss(params))
    for p, f in zip(params, frozen, strict=True):
        assert torch.equal(p.detach(), f)


@pytest.mark.parametrize(("key", "variant"), _variants())
@pytest.mark.parametrize("foreach", [False, True])
def test_none_grad_leaves_param_and_state_untouched(key: str, variant: int, foreach: bool) -> None:
    problem = SumOfQuadratics()
    params = make_params()
    opt = _build(key, params, **_spec(key).variants[variant], foreach=foreach)
    _step_without(opt, params, problem, (1,))
    assert not opt.state[params[1]], "no state for a parameter that never had a gradient"

    _step_without(opt, params, problem, ())
    before_param = params[0].detach().clone()
    before_state = {k: v.clone() for k, v in opt.state[params[0]].items()}
    _step_without(opt, params, problem, (0,))
    assert torch.equal(params[0].detach(), before_param)
    for k, v in before_state.items():
        assert torch.equal(opt.state[params[0]][k], v), k


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtypes(key: str, dtype: torch.dtype) -> None:
    problem = SumOfQuadratics()
    params = make_params(dtype)
    opt = _build(key, params, **_spec(key).variants[0])
    initial = float(problem.loss(params).detach())
    run_steps(opt, params, lambda: problem.loss(params), 10)
    assert all(p.dtype == dtype for p in params)
    assert all(torch.isfinite(p).all() for p in params)
    assert float(problem.loss(params).detach()) < initial
    for p in params:
        for name, (shape, state_dtype) in _state_shapes(opt, p, _group_of(opt, p)).items():
            assert opt.state[p][name].dtype == state_dtype, name
            assert tuple(opt.state[p][name].shape) == tuple(shape), name


def _group_of(opt: torch.optim.Optimizer, param: torch.Tensor) -> dict[str, Any]:
    return next(g for g in opt.param_groups if any(p is param for p in g["params"]))


def _state_shapes(opt: torch.optim.Optimizer, p: torch.Tensor, group: dict[str, Any]) -> Any:
    return opt.state_shapes(p, group)  # type: ignore[attr-defined]


def _step_without(
    opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], problem: SumOfQuadratics, dropped: tuple[int, ...]
) -> None:
    """One step in which ``params[i]`` for ``i`` in ``dropped`` take no part.

    For gradient methods their gradient is None; gradient-free methods see them frozen
    (``requires_grad=False``), the only way a forward-only method can tell.
    """
    if opt.capabilities.gradient_free:  # type: ignore[attr-defined]
        for i in dropped:
            params[i].requires_grad_(False)
        take_step(opt, params, lambda: problem.loss(params))
        for i in dropped:
            params[i].requires_grad_(True)
    else:
        take_step(opt, params, lambda: problem.loss(params), drop=dropped)


@pytest.mark.parametrize("key", KEYS)
def test_deepcopy_continues_identically(key: str) -> None:
    problem = SumOfQuadratics()
    params = make_params()
    opt = _build(key, params, **_spec(key).variants[-1])
    run_steps(opt, params, lambda: problem.loss(params), 3)
    params_copy, opt_copy = copy.deepcopy((params, opt))
    expected = run_steps(opt, params, lambda: problem.loss(params), 3)
    actual = run_steps(opt_copy, params_copy, lambda: problem.loss(params_copy), 3)
    for e_step, a_step in zip(expected, actual, strict=True):
        for e, a in zip(e_step, a_step, strict=True):
            assert torch.equal(e, a)


@pytest.mark.parametrize(("key", "variant"), _variants())
def test_state_bytes_match_declared_state(key: str, variant: int) -> None:
    problem = SumOfQuadratics()
    params = make_params(torch.float32)
    opt = _build(key, params, **_spec(key).variants[variant])
    _step_without(opt, params, problem, (3,))
    expected = 0
    for i, p in enumerate(params):
        shapes = _state_shapes(opt, p, _group_of(opt, p)) if i != 3 else {}
        assert set(opt.state[p]) == set(shapes)
        for shape, dtype in shapes.values():
            expected += math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    assert steepest.state_bytes(opt) == expected


@pytest.mark.parametrize("key", KEYS)
def test_bad_hyperparameters_raise(key: str) -> None:
    params = make_params()
    with pytest.raises(ValueError, match="lr"):
        _build(key, params, lr=-1.0)
    with pytest.raises(TypeError, match="not_a_hyperparameter"):
        _build(key, params, not_a_hyperparameter=1.0)
    for bad in _spec(key).error_inputs:
        with pytest.raises(bad.error, match=bad.match):
            _build(key, params, **bad.kwargs)


@pytest.mark.parametrize("key", KEYS)
def test_mismatched_state_dict_raises_and_keeps_state(key: str) -> None:
    problem = SumOfQuadratics()
    params = make_params()
    opt = _build(key, params, **_spec(key).variants[-1])
    run_steps(opt, params, lambda: problem.loss(params), 2)
    good = copy.deepcopy(opt.state_dict())
    before = _state_snapshot(opt)
    before_groups = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])

    two_groups = copy.deepcopy(good)
    two_groups["param_groups"] = [two_groups["param_groups"][0], {**two_groups["param_groups"][0], "params": []}]
    fewer_params = copy.deepcopy(good)
    fewer_params["param_groups"][0]["params"] = fewer_params["param_groups"][0]["params"][:-1]
    wrong_shape = copy.deepcopy(good)
    for entry in wrong_shape["state"].values():
        for k, v in entry.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                entry[k] = torch.zeros(*v.shape, 2, dtype=v.dtype)
    renamed_key = copy.deepcopy(good)
    for entry in renamed_key["state"].values():
        if entry:
            entry["unexpected"] = entry.pop(next(iter(entry)))
    bad_lr = copy.deepcopy(good)
    bad_lr["param_groups"][0]["lr"] = -1.0
    cases = {
        "groups": two_groups,
        "params": fewer_params,
        "not a dict": {"state": {}},
        "lr": bad_lr,
    }
    if any(good["state"].values()):
        cases["keys"] = renamed_key
    if any(v.dim() > 0 for entry in good["state"].values() for v in entry.values() if isinstance(v, torch.Tensor)):
        cases["shape"] = wrong_shape
    for name, bad in cases.items():
        with pytest.raises(ValueError):
            opt.load_state_dict(bad)
        _assert_same_state(before, _state_snapshot(opt))
        after_groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        assert after_groups == before_groups, name


@pytest.mark.parametrize("key", KEYS)
def test_sparse_gradients(key: str) -> None:
    params = [torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))]
    opt = _build(key, params, **_spec(key).variants[0])
    caps = opt.capabilities  # type: ignore[attr-defined]
    if caps.gradient_free:
        assert not caps.supports_sparse, "gradient-free optimizers never read .grad: nothing sparse to support"
        return

    def sparse_closure() -> torch.Tensor:
        params[0].grad = torch.eye(4, 3, dtype=torch.float64).to_sparse()
        return (params[0].detach() ** 2).sum()

    sparse_closure()
    before = params[0].detach().clone()
    closure = sparse_closure if caps.requires_closure else None
    if caps.supports_sparse:
        opt.step(closure)
        assert not torch.equal(params[0].detach(), before)
    else:
        with pytest.raises(RuntimeError, match="sparse"):
            opt.step(closure)
        assert torch.equal(params[0].detach(), before)


@pytest.mark.parametrize("key", KEYS)
def test_nan_gradient_propagates(key: str) -> None:
    """Documented behaviour: NaN gradients are not checked (that would need a host sync).

    The NaN reaches the parameter or its state. The sign methods make the parameter entry NaN in
    the same step although ``torch.sign(nan)`` is 0 (tests/optim/test_sign_nan.py checks that
    for every sign method and path).
    """
    params = make_params()
    opt = _build(key, params, **_spec(key).variants[0])
    problem = SumOfQuadratics()
    if opt.capabilities.gradient_free:  # type: ignore[attr-defined]
        # No gradient to poison: a NaN loss must reach the parameters.
        take_step(opt, params, lambda: problem.loss(params) * float("nan"))
        assert any(torch.isnan(p).any() for p in params if p.numel())
        return

    def poison(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[0, 0] = float("nan")
        return grad

    handle = params[0].register_hook(poison)
    take_step(opt, params, lambda: problem.loss(params))
    handle.remove()
    state_tensors = [v for v in opt.state[params[0]].values() if isinstance(v, torch.Tensor)]
    assert torch.isnan(params[0]).any() or any(torch.isnan(v).any() for v in state_tensors)
    assert all(torch.isfinite(p).all() for p in params[1:]) or REGISTRY[key].capabilities.global_statistic


@pytest.mark.parametrize(("key", "variant"), _variants())
def test_maximize_equals_minimizing_the_negation(key: str, variant: int) -> None:
    problem = SumOfQuadratics()
    kwargs = _spec(key).variants[variant]
    params_min, params_max = make_params(), make_params()
    opt_min = _build(key, params_min, **kwargs)
    opt_max = _build(key, params_max, **kwargs, maximize=True)
    a = run_steps(opt_min, params_min, lambda: problem.loss(params_min), 4)
    b = run_steps(opt_max, params_max, lambda: problem.loss(params_max), 4, sign=-1.0)
    for sa, sb in zip(a, b, strict=True):
        for x, y in zip(sa, sb, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("key", KEYS)
def test_closure_requirement_is_enforced(key: str) -> None:
    """Optimizers that need a closure say so clearly; the others accept one and return its loss."""
    problem = SumOfQuadratics()
    params = make_params()
    opt = _build(key, params, **_spec(key).variants[0])
    caps = opt.capabilities  # type: ignore[attr-defined]
    before = [p.detach().clone() for p in params]
    if caps.requires_closure or caps.gradient_free:
        with torch.enable_grad():
            make_closure(params, lambda: problem.loss(params))()
        with pytest.raises(RuntimeError, match="closure"):
            opt.step()
        assert all(torch.equal(p.detach(), b) for p, b in zip(params, before, strict=True))
    else:
        # The closure contract: backward(create_graph=True) for optimizers that need HVPs.
        closure = make_closure(params, lambda: problem.loss(params), create_graph=caps.needs_create_graph)
        loss = opt.step(closure)
        assert loss is not None and torch.equal(loss, problem.loss(before).detach())
