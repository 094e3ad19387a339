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
