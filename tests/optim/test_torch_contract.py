"""The torch.optim contract over every registry entry (issue #23): what torch's own optimizers do, ours do.

Subclassing, tensor learning rates, old checkpoints, ``load_state_dict`` hooks and foreign
entries in ``optimizer.state``. Each test runs for every registered optimizer.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from steepest.optim._registry import REGISTRY
from tests.optim.optim_db import DB, build
from tests.optim.problems import SumOfQuadratics, make_params, run_steps

KEYS = sorted(REGISTRY)


def _variant(key: str) -> dict[str, Any]:
    return dict(DB[key].variants[0])


class _Wrapper:
    """What Lightning's ``LightningOptimizer`` and Fabric's wrapper do: subclass around an instance."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.__dict__ = optimizer.__dict__


@pytest.mark.parametrize("key", KEYS)
def test_subclasses_with_any_signature_work(key: str) -> None:
    """A dynamic wrapper subclass around an instance trains exactly like the optimizer itself."""
    cls = REGISTRY[key].cls
    problem = SumOfQuadratics()
    reference_params = make_params()
    reference = build(key, reference_params, **_variant(key))
    expected = run_steps(reference, reference_params, lambda: problem.loss(reference_params), 3)

    params = make_params()
    original = build(key, params, **_variant(key))
    wrapped = type(f"Lightning{cls.__name__}", (_Wrapper, cls), {})(original)
    assert isinstance(wrapped, cls)
    actual = run_steps(wrapped, params, lambda: problem.loss(params), 3)
    for e, a in zip(expected, actual, strict=True):
        for x, y in zip(e, a, strict=True):
            assert torch.equal(x, y)


@pytest.mark.parametrize("key", KEYS)
def test_kwargs_subclass_constructs_and_validates(key: str) -> None:
    """``class Sub(Opt)`` taking ``**kwargs`` builds, and its values are still validated."""
    cls = REGISTRY[key].cls

    class Sub(cls):  # type: ignore[misc, valid-type]
        def __init__(self, params: Any, **kwargs: Any) -> None:
            super().__init__(params, **kwargs)

    params = make_params()
    opt = Sub(DB[key].prepare(params) if DB[key].prepare else params, **_variant(key))
    assert isinstance(opt, cls)
    with pytest.raises(ValueError, match="lr"):
        Sub(DB[key].prepare(make_params()) if DB[key].prepare else make_params(), **{**_variant(key), "lr": -1.0})


@pytest.mark.parametrize("key", KEYS)
def test_tensor_lr_gives_the_float_lr_trajectory(key: str) -> None:
    """``lr=torch.tensor(x)`` is accepted, stays a tensor, and steps exactly as ``lr=x``; a scheduler fills it."""
    problem = SumOfQuadratics()
    runs = []
    for as_tensor in (False, True):
        params = make_params()
        kwargs = _variant(key)
        lr = float(kwargs.pop("lr", 0.01))
        opt = build(key, params, lr=torch.tensor(lr, dtype=torch.float64) if as_tensor else lr, **kwargs)
        scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        trajectory = []
        for _ in range(3):
            trajectory += run_steps(opt, params, lambda params=params: problem.loss(params), 1)
            scheduler.step()
        assert all(isinstance(g["lr"], torch.Tensor) == as_tensor for g in opt.param_groups)
        runs.append(trajectory)
    for e, a in zip(*runs, strict=True):
        for x, y in zip(e, a, strict=True):
            torch.testing.assert_close(y, x, rtol=1e-12, atol=0)


@pytest.mark.parametrize("key", KEYS)
def test_bad_tensor_lr_is_refused(key: str) -> None:
    kwargs = {k: v for k, v in _variant(key).items() if k != "lr"}
    for bad, match in ((torch.tensor([0.1, 0.2]), "1-element"), (torch.tensor(-0.1), "lr")):
        with pytest.raises(ValueError, match=match):
            build(key, make_params(), lr=bad, **kwargs)


#: The compiled-step checks in the default selection (the issue's four); the other elementwise
#: optimizers run under ``-m slow`` (a compile each, 2-10 s on 2 cores). Hessian-vector-product
#: optimizers need ``backward(create_graph=True)``, which a compiled step does not support, and
#: the projected groups of GaLore, Fira and FRUGAL (an SVD or a gather per tensor) are not traced
#: as one graph.
COMPILED_STEP_DEFAULT = ("lion", "adabelief", "lamb", "adam_mini")


def _compiled_step_keys() -> list[Any]:
    def elementwise(cls: Any) -> bool:
        caps = getattr(cls, "capabilities", None)
        return bool(caps and caps.supports_fused and caps.elementwise and not caps.needs_create_graph)

    keys = sorted(k for k, e in REGISTRY.items() if elementwise(e.cls))
    return [pytest.param(k, marks=[] if k in COMPILED_STEP_DEFAULT else [pytest.mark.slow]) for k in keys]


@pytest.mark.parametrize("key", _compiled_step_keys())
def test_compiled_step_with_tensor_lr_compiles_once_without_graph_breaks(key: str) -> None:
    """``torch.compile(opt.step)`` under a per-step LambdaLR: one graph, no break, the eager trajectory.

    Counted as torch's compiled-optimizer tests count: dynamo's ``unique_graphs`` and ``graph_break``.
    """
    from torch._dynamo.utils import counters

    problem = SumOfQuadratics()
    runs = []
    for compiled in (False, True):
        torch._dynamo.reset()
        counters.clear()
        params = make_params(torch.float32)
        kwargs = _variant(key)
        lr = float(kwargs.pop("lr", 0.01))
        opt = build(key, params, lr=torch.tensor(lr), **kwargs)
        step = torch.compile(opt.step) if compiled else opt.step
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        for _ in range(5):
            problem.backward(params)
            step()
            scheduler.step()
        runs.append([p.detach().clone() for p in params])
        if compiled:
            assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
            assert not counters["graph_break"], dict(counters["graph_break"])
    torch._dynamo.reset()
    for eager, compiled_param in zip(*runs, strict=True):
        torch.testing.assert_close(compiled_param, eager, rtol=1e-5, atol=1e-6)
