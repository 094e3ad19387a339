"""The fused path (``fused=True``): same trajectory as the per-tensor path, no recompiles, fallback.

Every registry entry whose class declares ``capabilities.supports_fused`` runs here, each with every
hyperparameter variant of ``optim_db``. A run drives 50 steps with a scheduler that changes ``lr``,
``betas`` and ``weight_decay`` every step and drops one parameter's gradient at step 2, and checks:

* the fused trajectory equals the per-tensor one: float64 to rtol 1e-12 (the hyperparameter tensors
  are float64 there, so only the order of floating-point operations differs); float32 to rtol 1e-5
  over 10 steps, with and without ``maximize`` (the scalar arithmetic runs in float32 inside the
  kernel, in double in eager); bfloat16 to 2e-2 over 5 steps (inductor computes bfloat16 in float32
  and rounds once per stored value, eager rounds after every op);
* at most two graphs per param group are compiled (the full bucket, and the bucket without the
  dropped parameter) and none after step 3: hyperparameter changes never recompile;
* no :class:`FusedFallbackWarning` (the update compiled as one graph).

The same trajectory checks run on a GPU under ``pytest -m cuda`` (deselected by default: CI has no
GPU; ``benchmarks/gpu_checks.sh`` runs them where one is lent).

Compiling costs 1-10 s per graph on a cold inductor cache, so the bfloat16 runs, ``maximize=True``,
the per-tensor -> fused checkpoint direction and the float64 variants after the first two of each
optimizer are marked slow (``pytest -m slow`` runs them).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor
from torch._dynamo.utils import counters

import steepest
from steepest.optim import _fused
from steepest.optim._base import SteepestOptimizer
from steepest.optim._registry import REGISTRY
from tests.optim.optim_db import DB, build
from tests.optim.problems import SumOfQuadratics, make_params, take_step


def _supports_fused(key: str) -> bool:
    cls = REGISTRY[key].cls
    return isinstance(cls, type) and issubclass(cls, SteepestOptimizer) and cls.capabilities.supports_fused


FUSED_KEYS = sorted(key for key in REGISTRY if _supports_fused(key))

#: The elementwise optimizers issue 8 names; each must offer the fused path.
REQUIRED_FUSED = (
    "sign_sgd",
    "signum",
    "lion",
    "adabelief",
    "adan",
    "diffgrad",
    "lamb",
    "lars",
    "adagrad_norm",
    "adam_mini",
    "scale",
    "galore_adamw",
    "fira",
    "frugal",
)


#: Registry entries without the library's fused path, and why; every other entry must offer it.
NOT_FUSED = {
    "sgd": "torch.optim.SGD itself, with torch's own fused=True",
    "adamw": "torch.optim.AdamW itself, with torch's own fused=True",
    "blockllm": "the trained parameter set changes at every reselection: a new graph each time",
    "mfac": "not elementwise: an m x m system over the gradient history",
    "newton_cg": "not elementwise: conjugate-gradient solves with Hessian-vector products",
    **dict.fromkeys(
        ("mezo", "sparse_mezo", "zo_sign_sgd", "zo_adam", "forward_gradient"),
        "zeroth-order: the step is loss evaluations under seeded perturbations",
    ),
    **dict.fromkeys(
        ("sls", "sls_adam", "ponos", "sps", "sps_max", "mdb"),
        "step-size search: the step re-evaluates the loss under trial step sizes",
    ),
}


#: Hyperparameter variants the default selection runs per optimizer in the float64 matrix; the
#: rest are marked slow. Each variant is a graph of its own and compiles for 3-10 s on a cold
#: inductor cache (the matrix over every variant took 5 of the suite's 10 minutes).
DEFAULT_VARIANTS = 2


def _variants() -> list[Any]:
    return [
        pytest.param(key, i, id=f"{key}-v{i}", marks=[pytest.mark.slow] if i >= DEFAULT_VARIANTS else [])
        for key in FUSED_KEYS
        for i in range(len(DB[key].variants))
    ]


pytestmark = pytest.mark.usefixtures("fresh_dynamo")


#: Optimizers whose graph depends on more than which parameters have a gradient, with the steps
#: after which no new graph may appear and the graphs allowed per param group. Sophia-H refreshes
#: its Hessian estimate per parameter every ``update_period`` steps: the update with the estimate
#: and without it are two graphs, and a parameter whose gradient was dropped once is due one step
#: later than the rest (4 parameters with all, none, the other 3 or only its estimate; 3 with).
STRUCTURAL_GRAPHS = {"sophia_h": (13, 5)}


#: float64 tolerances other than 1e-12. Sophia-H's clipped steps bounce around the quadratic's
#: minimum and amplify a difference of one rounding about tenfold every five steps: the fused and
#: per-tensor trajectories are bit-identical for 20 steps (the eager foreach path for all 50), then
#: differ by 4e-16 at step 20 and 8e-13 at step 45 (inductor contracts a multiply-add into one FMA).
FLOAT64_RTOL = {"sophia_h": 1e-10}


def _schedule(opt: torch.optim.Optimizer, initial: list[dict[str, Any]], step: int) -> None:
    """Change every real hyperparameter a scheduler would touch, differently each step."""
    for group, start in zip(opt.param_groups, initial, strict=True):
        group["lr"] = start["lr"] * (0.5 + 0.5 * ((step * 7) % 11) / 10)
        if "betas" in group:
            group["betas"] = tuple(b * (1 - 0.01 * (step % 3)) for b in start["betas"])
        if "weight_decay" in group:
            group["weight_decay"] = start["weight_decay"] * (1 + 0.1 * (step % 4))


def _trajectory(
    key: str, kwargs: dict[str, Any], dtype: torch.dtype, steps: int, device: str = "cpu", **path: Any
) -> list[list[torch.Tensor]]:
    problem = SumOfQuadratics()
    params = make_params(dtype, device=device)
    opt = build(key, params, **kwargs, **path)
    initial = [{k: group[k] for k in ("lr", "betas", "weight_decay") if k in group} for group in opt.param_groups]
    warmup, graphs_per_group = STRUCTURAL_GRAPHS.get(key, (3, 2))
    graphs_after_warmup = None
    out = []
    for step in range(steps):
        _schedule(opt, initial, step)
        take_step(opt, params, lambda: problem.loss(params), drop=(0,) if step == 2 else ())
        out.append([p.detach().clone() for p in params])
        if step == warmup and path.get("fused"):
            graphs_after_warmup = counters["stats"]["unique_graphs"]
    if path.get("fused"):
        if graphs_after_warmup is not None:
            assert counters["stats"]["unique_graphs"] == graphs_after_warmup, f"{key}: recompiled after step {warmup}"
        # Per fusing group: one graph for all its parameters, one for the step without parameter 0's
        # gradient. A group whose update is not an elementwise pass (``fused_applies``: NormalizedSD's
        # l1 step, projected GaLore groups) keeps its own path and compiles nothing.
        fusing = sum(bool(opt.fused_applies(group)) for group in opt.param_groups)  # type: ignore[attr-defined]
        graphs = counters["stats"]["unique_graphs"]
        assert min(fusing, 1) <= graphs <= graphs_per_group * fusing, dict(counters["stats"])
    return out


def _assert_close(
    expected: list[list[torch.Tensor]], actual: list[list[torch.Tensor]], rtol: float, atol: float
) -> None:
    for step, (e_step, a_step) in enumerate(zip(expected, actual, strict=True)):
        for e, a in zip(e_step, a_step, strict=True):
            torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m, s=step: f"step {s}: {m}")


def test_required_optimizers_offer_fused() -> None:
    missing = [key for key in REQUIRED_FUSED if key not in FUSED_KEYS]
    assert not missing, f"no fused path: {missing}"


@pytest.mark.parametrize(("key", "variant"), _variants())
def test_fused_matches_per_tensor_float64_without_recompiles(key: str, variant: int) -> None:
    kwargs = DB[key].variants[variant]
    expected = _trajectory(key, kwargs, torch.float64, 50, foreach=False)
    counters.clear()
    actual = _trajectory(key, kwargs, torch.float64, 50, fused=True)
    _assert_close(expected, actual, rtol=FLOAT64_RTOL.get(key, 1e-12), atol=1e-14)


@pytest.mark.parametrize("key", FUSED_KEYS)
@pytest.mark.parametrize("maximize", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_fused_matches_per_tensor_float32(key: str, maximize: bool) -> None:
    kwargs = {**DB[key].variants[0], "maximize": maximize}
    expected = _trajectory(key, kwargs, torch.float32, 10, foreach=False)
    actual = _trajectory(key, kwargs, torch.float32, 10, fused=True)
    _assert_close(expected, actual, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("key", FUSED_KEYS)
def test_fused_matches_per_tensor_bfloat16(key: str) -> None:
    """bfloat16 parameters and state; hyperparameters stay float32 tensors, as eager keeps doubles."""
    kwargs = DB[key].variants[0]
    expected = _trajectory(key, kwargs, torch.bfloat16, 5, foreach=False)
    actual = _trajectory(key, kwargs, torch.bfloat16, 5, fused=True)
    _assert_close(expected, actual, rtol=2e-2, atol=2e-2)


def _cuda_device() -> str:
    """The device of the ``cuda``-marked checks; selecting them where torch sees no GPU is a failure."""
    if not torch.cuda.is_available():
        pytest.fail("the cuda checks (pytest -m cuda) need a CUDA device and torch sees none")
    return "cuda"


@pytest.mark.cuda
@pytest.mark.parametrize("key", FUSED_KEYS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_fused_on_cuda_matches_per_tensor_on_cuda(key: str, dtype: torch.dtype) -> None:
    """The compiled update on CUDA (Triton kernels) follows the per-tensor path there.

    Same scheduler, graph bounds and tolerances as on the CPU; compiling must not fall back.
    """
    device = _cuda_device()
    kwargs = DB[key].variants[0]
    steps, rtol, atol = (10, 1e-5, 1e-6) if dtype == torch.float32 else (50, FLOAT64_RTOL.get(key, 1e-12), 1e-14)
    expected = _trajectory(key, kwargs, dtype, steps, device=device, foreach=False)
    counters.clear()
    actual = _trajectory(key, kwargs, dtype, steps, device=device, fused=True)
    assert all(p.is_cuda for p in actual[-1])
    _assert_close(expected, actual, rtol=rtol, atol=atol)


@pytest.mark.parametrize("key", FUSED_KEYS)
@pytest.mark.parametrize("direction", ["fused->per-tensor", pytest.param("per-tensor->fused", marks=pytest.mark.slow)])
def test_state_dict_round_trip_between_fused_and_unfused(key: str, direction: str) -> None:
    """A checkpoint taken on one path continues on the other as an uninterrupted run would."""
    kwargs = DB[key].variants[0]
    first, second = (
        ({"fused": True}, {"foreach": False})
        if direction.startswith("fused")
        else ({"foreach": False}, {"fused": True})
    )
    problem = SumOfQuadratics()
    params = make_params()
    opt = build(key, params, **kwargs, **first)
    for _ in range(3):
        take_step(opt, params, lambda params=params: problem.loss(params))
    saved_params = [p.detach().clone() for p in params]
    state = copy.deepcopy(opt.state_dict())
    for _ in range(3):
        take_step(opt, params, lambda params=params: problem.loss(params))

    resumed_params = [torch.nn.Parameter(p.clone()) for p in saved_params]
    resumed = build(key, resumed_params, **kwargs, **second)
    resumed.load_state_dict(state)
    # The path is the optimizer's own choice, not the checkpoint's.
    assert all(group.get("fused") == second.get("fused") for group in resumed.param_groups)
    for _ in range(3):
        take_step(resumed, resumed_params, lambda: problem.loss(resumed_params))
    for p, q in zip(params, resumed_params, strict=True):
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-14)


def test_fused_and_foreach_true_together_raise() -> None:
    with pytest.raises(ValueError, match="fused=True and foreach=True"):
        steepest.Lion(make_params(), fused=True, foreach=True)
    opt = steepest.Lion(make_params(), fused=True)
    with pytest.raises(ValueError, match="fused=True and foreach=True"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "foreach": True})


def test_every_other_optimizer_offers_the_fused_path() -> None:
    assert sorted(set(REGISTRY) - set(FUSED_KEYS)) == sorted(NOT_FUSED)


def test_fused_is_a_hyperparameter_of_exactly_the_fused_optimizers() -> None:
    for key, entry in REGISTRY.items():
        cls = entry.cls
        if isinstance(cls, type) and issubclass(cls, SteepestOptimizer):
            assert ("fused" in cls.hyperparameter_defaults) == cls.capabilities.supports_fused, key


def _failing_backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
    raise RuntimeError("no compiler here")


def test_compile_failure_falls_back_to_foreach_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fused, "COMPILE_BACKEND", _failing_backend)
    problem = SumOfQuadratics()
    trajectories = []
    for path in ({"fused": True}, {"foreach": True}):
        params = make_params(torch.float32)
        opt = steepest.Lion(params, lr=0.01, weight_decay=0.1, **path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(4):
                take_step(opt, params, lambda params=params: problem.loss(params))
        fallbacks = [w for w in caught if issubclass(w.category, _fused.FusedFallbackWarning)]
        assert len(fallbacks) == (1 if path.get("fused") else 0)
        if path.get("fused"):
            assert fallbacks[0].filename.endswith("problems.py")  # the caller of step(), not steepest
            assert "no compiler here" in str(fallbacks[0].message) or "BackendCompilerFailed" in str(
                fallbacks[0].message
            )
        trajectories.append([p.detach().clone() for p in params])
    for fused, foreach in zip(*trajectories, strict=True):
        assert torch.equal(fused, foreach)


def test_fused_is_opt_in() -> None:
    """``fused=None`` (the default) is the foreach path, whatever the size, as in torch."""
    params = [torch.nn.Parameter(torch.zeros(1 << 25))]
    for fused, expect in ((None, False), (False, False), (True, True)):
        opt = steepest.Lion(params, lr=0.01, fused=fused)
        assert opt._use_fused(opt.param_groups[0]) is expect
    assert steepest.Lion.hyperparameter_defaults["fused"] is None


def test_compiled_update_is_shared_by_instances() -> None:
    problem = SumOfQuadratics()
    for _ in range(3):
        params = make_params(torch.float32)
        opt = steepest.Lion(params, lr=0.01, fused=True)
        take_step(opt, params, lambda params=params: problem.loss(params))
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("shape", [(), (7, 1), (3, 5)])
def test_materialized_keeps_the_value_of_scalars_and_block_tensors(shape: tuple[int, ...]) -> None:
    """``materialized`` only changes where inductor stores a value, never the value itself."""
    from steepest.optim._functional import materialized

    def update(param: Tensor, v: Tensor) -> None:
        param.div_(materialized(v.sqrt() + 1e-3))

    v = torch.rand(shape, dtype=torch.float64) + 0.5
    param = torch.randn(7, 5, dtype=torch.float64) if shape != (3, 5) else torch.randn(3, 5, dtype=torch.float64)
    expected = param / (v.sqrt() + 1e-3)
    torch.compile(update, backend=_fused.COMPILE_BACKEND, fullgraph=True)(param, v)
    torch.testing.assert_close(param, expected, rtol=1e-12, atol=0)
    assert materialized(v) is v  # eager: unchanged


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_materialized_block_values_keep_nan_infinities_and_signed_zeros(dtype: torch.dtype) -> None:
    """The per-block form (a maximum over broadcast copies) returns each value exactly, specials included."""
    from steepest.optim._functional import materialized

    def update(param: Tensor, v: Tensor) -> None:
        param.mul_(materialized(v))

    v = torch.tensor([[float("nan")], [float("inf")], [-float("inf")], [-0.0], [0.0], [-2.5], [3e-40]], dtype=dtype)
    param = torch.ones(7, 5, dtype=dtype)
    torch.compile(update, backend=_fused.COMPILE_BACKEND, fullgraph=True)(param, v)
    expected = torch.ones(7, 5, dtype=dtype) * v
    torch.testing.assert_close(param, expected, rtol=0, atol=0, equal_nan=True)
    numbers = ~expected.isnan()  # (a NaN's sign bit carries no meaning)
    assert torch.equal(torch.signbit(param)[numbers], torch.signbit(expected)[numbers])  # -0.0 stays -0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_norms_accumulate_in_float64_inside_a_compiled_cpu_update(dtype: torch.dtype) -> None:
    """``norm_dtype``: float32-or-wider eagerly; float64 when compiled on CPU (no cascade helper)."""
    from steepest.optim._functional import norm_dtype

    x = torch.randn(50_000, dtype=torch.float64).to(dtype)

    def norm(t: Tensor) -> Tensor:
        return torch.linalg.vector_norm(t, dtype=norm_dtype(t))

    assert norm_dtype(x) == torch.promote_types(dtype, torch.float32)
    compiled = torch.compile(norm, backend=_fused.COMPILE_BACKEND, fullgraph=True)(x)
    assert compiled.dtype == torch.float64
    expected = torch.linalg.vector_norm(x.double())
    torch.testing.assert_close(compiled, expected, rtol=1e-12, atol=0)


def test_every_tensor_is_compiled_even_small_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fused=True`` compiles every tensor of the step, the 4-element vector included."""
    seen: list[int] = []
    compiled = _fused.compiled_step

    def recording(cls: type, layout: Any) -> Any:
        step = compiled(cls, layout)

        def run(optimizer: Any, views: Any, params: list[list[Tensor]], *rest: Any) -> Any:
            seen.extend(p.numel() for bucket in params for p in bucket)
            return step(optimizer, views, params, *rest)

        return run

    monkeypatch.setattr(_fused, "compiled_step", recording)
    params = make_params(torch.float64)
    opt = steepest.Lion(params, lr=0.01, fused=True)
    take_step(opt, params, lambda: SumOfQuadratics().loss(params))
    assert sorted(seen) == sorted(p.numel() for p in params)
    assert counters["stats"]["unique_graphs"] == 1


def _distinct_groups(count: int, dtype: torch.dtype = torch.float32) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(3 + i, 2 + i % 3, generator=gen, dtype=dtype)) for i in range(count)]


def test_many_groups_of_distinct_shapes_compile_one_graph_without_the_recompile_limit() -> None:
    """10 groups of distinct shapes: one graph for the whole step, equal to the per-tensor step."""
    results = []
    for path in ({"foreach": False}, {"fused": True}):
        params = _distinct_groups(10, torch.float64)
        opt = steepest.Lion([{"params": [p], "lr": 0.01 * (i + 1)} for i, p in enumerate(params)], **path)
        for step in range(3):
            for i, p in enumerate(params):
                p.grad = torch.full_like(p, float(i - 4.5 + step))
            opt.step()
        results.append([p.detach().clone() for p in params])
    for eager, fused in zip(*results, strict=True):
        torch.testing.assert_close(fused, eager, rtol=1e-12, atol=1e-14)
    assert counters["stats"]["unique_graphs"] == 1


def _recompile_limited_backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
    raise torch._dynamo.exc.FailOnRecompileLimitHit("recompile limit reached (as dynamo raises it)")


def _first_call_records_whether_written(
    update_group: Any, param: Tensor, before: Tensor, written: list[bool]
) -> Any:
    """``update_group`` that, on its first call (the foreach fallback's start), records whether ``param`` moved."""

    def eager(group: Any, *rest: Any) -> None:
        if not written:
            written.append(not torch.equal(param, before))
        update_group(group, *rest)

    return eager


@pytest.mark.parametrize("backend", [_recompile_limited_backend, "broken-midway"])
def test_a_step_whose_compilation_fails_writes_nothing_before_it_falls_back(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any failure of the compiled step leaves every parameter and state tensor bitwise as it was.

    ``broken-midway`` compiles the first group's update and fails in the middle of the step's graph
    (at the 9th of 10 groups, where dynamo's recompile limit used to stop a per-group compile);
    then the whole step runs on the foreach path, so it equals a foreach step exactly.
    """
    if backend == "broken-midway":
        real_update = steepest.Lion._single_tensor_update

        def update(self: Any, group: Any, params: Any, grads: Any, states: Any) -> None:
            if torch.compiler.is_compiling() and params[0].shape[0] == 11:  # the 9th group's tensor
                raise RuntimeError("compilation failed at the 9th group")
            real_update(self, group, params, grads, states)

        monkeypatch.setattr(steepest.Lion, "_single_tensor_update", update)
    else:
        monkeypatch.setattr(_fused, "COMPILE_BACKEND", backend)
    warnings.simplefilter("ignore", _fused.FusedFallbackWarning)
    runs = []
    for path in ({"fused": True}, {"foreach": True}):
        params = _distinct_groups(10)
        opt = steepest.Lion([{"params": [p]} for p in params], lr=0.01, **path)
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()  # state now exists on both paths (the fused one fell back at once)
        if path.get("fused"):
            del opt._fused_unavailable  # try to compile again, and fail again
        before = [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict()["state"])
        written: list[bool] = []
        eager = _first_call_records_whether_written(opt._update_group, params[0], before[0][0], written)
        opt._update_group = eager  # type: ignore[method-assign]
        opt.step()
        assert written and not any(written)
        runs.append(([p.detach().clone() for p in params], opt.state_dict()["state"]))
    (fused_params, fused_state), (foreach_params, foreach_state) = runs
    for a, b in zip(fused_params, foreach_params, strict=True):
        assert torch.equal(a, b)
    for key in foreach_state:
        for name, value in foreach_state[key].items():
            assert torch.equal(fused_state[key][name], value)


def test_sophia_g_fused_matches_per_tensor_with_hessian_refreshes() -> None:
    """The matrix never refreshes Sophia-G's ``h`` (it stays 0, every ratio clips); here it does."""
    problem = SumOfQuadratics()
    runs = []
    for path in ({"foreach": False}, {"fused": True}):
        params = make_params(torch.float64)
        opt = steepest.SophiaG(params, lr=0.05, rho=0.05, bs=4, weight_decay=0.1, **path)
        for step in range(8):
            take_step(opt, params, lambda params=params: problem.loss(params))
            if step % 2 == 0:
                opt.update_hessian()  # the current gradients stand in for sampled-label ones
        assert all(bool((opt.state[p]["hessian"] > 0).any()) for p in params if p.numel())
        runs.append([p.detach().clone() for p in params])
    _assert_close([runs[0]], [runs[1]], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_normalized_sd_fused_keeps_the_zero_and_nan_gradient_rules(norm: str) -> None:
    """No move for a zero gradient (the eager path's host branch), NaN spreads as eagerly."""
    for fill, expect in ((0.0, "unchanged"), (math.nan, "nan")):
        results = []
        for path in ({"foreach": False}, {"fused": True}):
            params = make_params(torch.float64)
            before = [p.detach().clone() for p in params]
            opt = steepest.NormalizedSD(params, lr=0.1, norm=norm, dual_scaled=norm == "linf", **path)
            for p in params:
                p.grad = torch.zeros_like(p)
            params[0].grad[0] = fill
            opt.step()
            results.append([p.detach().clone() for p in params])
        for eager, fused in zip(*results, strict=True):
            torch.testing.assert_close(fused, eager, rtol=1e-12, atol=1e-14, equal_nan=True)
        if expect == "unchanged":
            assert all(torch.equal(a, b) for a, b in zip(results[1], before, strict=True))
        else:
            assert all(bool(torch.isnan(p).all()) for p in results[1] if p.numel())
