"""The runner: deterministic, counts function/gradient evaluations fairly, records failures as runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
import torch
from torch import Tensor

from steepest.bench.runner import STATUS_DIVERGED, STATUS_ERROR, STATUS_OK, RunSpec, run, train
from steepest.bench.workloads import get_workload, workload_names
from steepest.optim._base import Capabilities


class ArmijoGD(torch.optim.Optimizer):
    """Gradient descent with Armijo backtracking: one closure call with gradients, trial points without."""

    capabilities = Capabilities(requires_closure=True, supports_foreach=False)

    def __init__(self, params: Iterable[Tensor], lr: float = 10.0) -> None:
        super().__init__(params, {"lr": lr})
        self.last_step_size: float | None = None
        self.own_counts = {"grad": 0, "nograd": 0}

    def _call(self, closure: Callable[[], Tensor]) -> Tensor:
        self.own_counts["grad" if torch.is_grad_enabled() else "nograd"] += 1
        return closure()

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        assert closure is not None
        with torch.enable_grad():
            loss = self._call(closure)
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        grads = [p.grad.clone() for p in params]  # type: ignore[union-attr]
        start = [p.clone() for p in params]
        sq = sum(float((g * g).sum()) for g in grads)
        t = float(self.param_groups[0]["lr"])
        while True:
            for p, x, g in zip(params, start, grads, strict=True):
                p.copy_(x - t * g)
            if float(self._call(closure)) <= float(loss) - 0.5 * t * sq or t < 1e-8:
                break
            t *= 0.5
        self.last_step_size = t
        return loss


class TwoPointZO(torch.optim.Optimizer):
    """A zeroth-order two-point method: two closure calls under no_grad per step, never reads .grad."""

    capabilities = Capabilities(requires_closure=True, gradient_free=True, supports_foreach=False)

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-2, eps: float = 1e-3) -> None:
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        assert closure is not None and not torch.is_grad_enabled()
        group = self.param_groups[0]
        params = group["params"]
        z = [torch.randn_like(p) for p in params]
        for p, d in zip(params, z, strict=True):
            p.add_(d, alpha=group["eps"])
        plus = closure()
        for p, d in zip(params, z, strict=True):
            p.add_(d, alpha=-2 * group["eps"])
        minus = closure()
        scale = float(plus - minus) / (2 * group["eps"])
        for p, d in zip(params, z, strict=True):
            p.add_(d, alpha=group["eps"] - group["lr"] * scale)
        return plus


def _spec(opt: str = "adamw", hp: dict[str, Any] | None = None, **kw: Any) -> RunSpec:
    return RunSpec("least_squares", "tiny", opt, hp if hp is not None else {"lr": 0.05}, **kw)


def test_my_workloads_are_registered_and_unknown_names_list_valid_ones() -> None:
    assert {"least_squares", "test_functions_2d"} <= set(workload_names())
    with pytest.raises(ValueError, match=r"valid workloads: .*least_squares"):
        get_workload("no_such_workload", "tiny")
    with pytest.raises(ValueError, match="unknown size"):
        get_workload("least_squares", "huge")  # type: ignore[arg-type]


def test_least_squares_knows_its_optimum() -> None:
    w = get_workload("least_squares", "tiny")
    model = w.init_model(0)
    a64 = w._data.a64  # type: ignore[attr-defined]
    b64 = w._data.b64  # type: ignore[attr-defined]
    x = torch.linalg.solve(a64.T @ a64, a64.T @ b64)
    with torch.no_grad():
        model.weight.copy_(x.to(torch.float32).unsqueeze(0))  # type: ignore[operator]
    assert w.evaluate(model)["suboptimality"] < 1e-5
    with torch.no_grad():
        model.weight.zero_()  # type: ignore[operator]
    assert w.evaluate(model)["suboptimality"] == pytest.approx(1.0)


def test_run_is_deterministic_and_records_every_eval_point() -> None:
    first, second = run(_spec(seed=3)), run(_spec(seed=3))
    other = run(_spec(seed=4))
    budget = get_workload("least_squares", "tiny").budget
    assert first.status == STATUS_OK
    assert [p.step for p in first.evals] == list(range(0, budget.max_steps + 1, budget.eval_every))
    assert [p.metrics for p in first.evals] == [p.metrics for p in second.evals]
    assert [p.metrics for p in first.evals] != [p.metrics for p in other.evals]
    last = first.evals[-1]
    assert last.examples == budget.max_steps * budget.batch_size
    assert last.func_evals == last.grad_evals == budget.max_steps  # plain optimizer: one of each per step
    assert last.lr == 0.05 and last.step_size is None
    assert last.grad_norm is not None and last.grad_norm > 0
    assert first.evals[0].grad_norm is None  # no gradient before the first step
    assert last.state_bytes == 2 * 16 * 4 + 4  # AdamW: exp_avg + exp_avg_sq (d=16, float32) + step
    assert first.peak_rss_bytes >= first.rss_at_start_bytes > 0
    times = [p.wall_time_s for p in first.evals]
    assert times == sorted(times) and times[0] == 0.0
    assert first.reached and first.steps_to_target is not None
    assert first.grad_evals_to_target == first.steps_to_target
    assert first.time_to_target_s is not None and first.time_to_target_s <= first.wall_time_s


def test_stop_at_target_ends_the_run() -> None:
    result = run(_spec(), stop_at_target=True)
    assert result.reached and result.total_steps == result.steps_to_target
    assert result.evals[-1].step == result.steps_to_target


def test_nan_run_is_recorded_as_diverged() -> None:
    result = run(_spec("sgd", {"lr": 1e3}))
    assert result.status == STATUS_DIVERGED
    assert not result.reached and result.steps_to_target is None
    assert "non-finite" in (result.error or "")
    assert result.total_steps < get_workload("least_squares", "tiny").budget.max_steps


def test_bad_hyperparameter_is_a_failed_run_not_an_exception() -> None:
    result = run(_spec("adamw", {"lr": -1.0}))
    assert result.status == STATUS_ERROR and "lr" in (result.error or "")
    assert result.evals == []


def test_closure_optimizer_is_charged_for_every_evaluation() -> None:
    workload = get_workload("least_squares", "tiny")
    made: list[ArmijoGD] = []

    def make(model: torch.nn.Module) -> torch.optim.Optimizer:
        made.append(ArmijoGD(model.parameters()))
        return made[0]

    result = train(workload, make, seed=0, spec=_spec("armijo"), max_steps=60)
    opt = made[0]
    last = result.evals[-1]
    assert result.status == STATUS_OK
    assert last.grad_evals == opt.own_counts["grad"] == 60
    assert last.func_evals == opt.own_counts["grad"] + opt.own_counts["nograd"]
    assert last.func_evals > 2 * 60  # backtracking: at least one trial point per step, often more
    assert last.step_size == opt.last_step_size and last.step_size is not None
    assert last.grad_norm is not None and last.grad_norm > 0
    assert result.evals[-1].metric < result.evals[0].metric


def test_gradient_free_optimizer_uses_no_gradients() -> None:
    workload = get_workload("least_squares", "tiny")
    result = train(workload, lambda m: TwoPointZO(m.parameters()), seed=0, spec=_spec("zo"), max_steps=50)
    last = result.evals[-1]
    assert result.status == STATUS_OK
    assert last.grad_evals == 0 and last.func_evals == 2 * 50
    assert last.grad_norm is None


def test_test_functions_workload_reports_each_function() -> None:
    w = get_workload("test_functions_2d", "tiny")
    result = run(RunSpec("test_functions_2d", "tiny", "adamw", {"lr": 0.05}))
    assert set(w.extra_metrics) <= set(result.final_metrics)
    final = result.final_metrics
    assert final["val_loss"] == pytest.approx(sum(final[k] for k in w.extra_metrics))
    assert final["val_loss"] < result.evals[0].val_loss / 10


def test_spec_key_covers_every_field() -> None:
    base = _spec()
    variants = [
        _spec(seed=1),
        _spec(study=1),
        _spec(trial=1),
        _spec(max_steps=10),
        _spec(hp={"lr": 0.06}),
        _spec("sgd"),
        RunSpec("least_squares", "quick", "adamw", {"lr": 0.05}),
        RunSpec("least_squares", "tiny", "adamw", {"lr": 0.05}, version="0.0.0"),
    ]
    keys = {base.key(), *(v.key() for v in variants)}
    assert len(keys) == len(variants) + 1
    assert base.key() == _spec().key()


def _special_keys() -> list[str]:
    from steepest.optim import REGISTRY

    return sorted(
        k for k, e in REGISTRY.items()
        if e.capabilities.requires_closure or e.capabilities.gradient_free or e.capabilities.needs_create_graph
    )


@pytest.mark.parametrize("key", _special_keys())
def test_registry_closure_and_curvature_optimizers_run_first_class(key: str) -> None:
    from steepest.bench.tuning import suggested
    from steepest.optim import optimizer_info

    caps = optimizer_info(key).capabilities
    result = run(RunSpec("least_squares", "tiny", key, suggested(key), max_steps=8))
    assert result.status == STATUS_OK, result.error
    last = result.evals[-1]
    assert last.step == 8
    if caps.gradient_free:
        assert last.grad_evals == 0 and last.func_evals >= 8
    elif caps.needs_create_graph:
        assert last.grad_evals >= 8 and last.func_evals >= 8  # Hessian-vector products add gradient evaluations
    else:
        assert last.grad_evals >= 8 and last.func_evals >= last.grad_evals


@pytest.mark.parametrize(("key", "hvps_per_step"), [("adahessian", 1), ("sophia_h", None), ("newton_cg", None)])
def test_hessian_vector_products_are_charged_as_gradient_evaluations(key: str, hvps_per_step: int | None) -> None:
    from steepest.bench.tuning import suggested

    steps = 8
    result = run(RunSpec("least_squares", "tiny", key, suggested(key), max_steps=steps))
    assert result.status == STATUS_OK, result.error
    last = result.evals[-1]
    if hvps_per_step is not None:
        # One gradient and one Hessian-vector product per step.
        assert last.grad_evals == steps * (1 + hvps_per_step)
    else:
        # Sophia-H refreshes every k steps (one product then); NewtonCG makes one per CG iteration.
        assert last.grad_evals > last.func_evals - (0 if key == "sophia_h" else steps) >= 0
