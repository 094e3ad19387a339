"""Non-finite gradients in the sign methods: the broken entry becomes NaN, on every code path.

``torch.sign`` maps NaN to 0. A sign method that signs its gradient (or its momentum) with it
would keep the parameter finite and freeze the coordinate for good behind a NaN buffer, hiding a
diverged run. The library's rule (``test_nan_gradient_propagates`` in the conformance matrix, and
torch's own optimizers) is that a bad gradient shows up in the parameters; for the sign methods
that means: a NaN or infinite gradient entry makes that parameter entry NaN in the same step, and
it stays NaN; every other entry stays finite. :class:`steepest.NormalizedSD` with a norm other
than the normalized l_inf (a group statistic, or no sign at all) shows a non-finite value in the
group (its docstring has the details); a zeroth-order method, whose gradient estimate is one
scalar, makes every entry NaN when a loss evaluation is not finite.

Each registry entry tagged ``sign`` runs with every hyperparameter variant of ``optim_db`` on the
per-tensor and foreach paths, and with its first variant on the fused path, compiled for real
(one small graph per optimizer class).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor
from torch._dynamo.utils import counters

import steepest
from steepest.optim._registry import REGISTRY
from tests.optim.optim_db import DB, build

SIGN_KEYS = sorted(steepest.list_optimizers(family="sign"))

#: Sign-family entries whose +-inf gradient entry does not give NaN, and why. Sophia-G's step is
#: sign(m) min(|m| / max(rho h, eps), 1): an infinite m is clipped to a finite sign step, the
#: clipping rule's reading of an infinite ratio, so only its NaN behaviour is checked here.
INFINITY_NOT_NAN = {"sophia_g": "clipped ratio, not a sign: an infinite m gives a full sign step"}

#: Gradient entries poisoned in the first step, in the (2, 3) parameter.
POISON = {(0, 1): math.nan, (1, 0): math.inf, (1, 2): -math.inf}


def _elementwise(key: str, variant: dict[str, Any]) -> bool:
    """Whether the update of one entry reads only that entry's gradient and state."""
    if not REGISTRY[key].capabilities.global_statistic:
        return True
    # NormalizedSD's normalized l_inf step is sign(g); the other norms divide by a group statistic
    return key == "normalized_sd" and variant.get("norm") == "linf" and not variant.get("dual_scaled", False)


def _paths(key: str) -> list[Any]:
    caps = REGISTRY[key].cls.capabilities
    out = []
    for index in range(len(DB[key].variants)):
        out.append(pytest.param(key, index, {"foreach": False}, id=f"{key}-{index}-per_tensor"))
        if caps.supports_foreach:
            out.append(pytest.param(key, index, {"foreach": True}, id=f"{key}-{index}-foreach"))
        if caps.supports_fused and index == 0:
            out.append(pytest.param(key, index, {"fused": True}, id=f"{key}-{index}-fused"))
    return out


CASES = [case for key in SIGN_KEYS for case in _paths(key)]


pytestmark = pytest.mark.usefixtures("fresh_dynamo")


def _params() -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in ((2, 3), (4,))]


def _gradients(step: int, poison: dict[tuple[int, int], float]) -> list[Tensor]:
    """Finite gradients with entries of both signs (different each step), poisoned at step 0."""
    gen = torch.Generator().manual_seed(10 + step)
    grads = [torch.randn(s, generator=gen, dtype=torch.float64) for s in ((2, 3), (4,))]
    if step == 0:
        for index, value in poison.items():
            grads[0][index] = value
    return grads


def _run(key: str, variant: dict[str, Any], path: dict[str, Any], poison: dict[tuple[int, int], float]) -> list[Tensor]:
    params = _params()
    opt = build(key, params, **variant, **path)
    for step in range(3):
        for p, g in zip(params, _gradients(step, poison), strict=True):
            p.grad = g
        opt.step()
    return [p.detach().clone() for p in params]


def test_the_sign_family_is_what_this_file_covers() -> None:
    """A new sign method gets classified here (elementwise or not, its infinity rule) when it is added."""
    assert SIGN_KEYS == ["lion", "normalized_sd", "sign_sgd", "signum", "sophia_g", "zo_sign_sgd"]
    assert set(INFINITY_NOT_NAN) <= set(SIGN_KEYS)


@pytest.mark.parametrize(("key", "index", "path"), [c for c in CASES if c.values[0] != "zo_sign_sgd"])
def test_non_finite_gradient_entry_makes_the_parameter_entry_nan(key: str, index: int, path: dict[str, Any]) -> None:
    variant = DB[key].variants[index]
    poison = {i: v for i, v in POISON.items() if math.isnan(v) or key not in INFINITY_NOT_NAN}
    a, b = _run(key, variant, path, poison)
    if path.get("fused"):
        assert counters["stats"]["unique_graphs"] >= 1, "the fused step did not compile"
        # the compiled update keeps the rule exactly (inductor does not fold the ``0 * x`` away)
        for eager, fused in zip(_run(key, variant, {"foreach": False}, poison), (a, b), strict=True):
            torch.testing.assert_close(fused, eager, rtol=1e-12, atol=1e-14, equal_nan=True)
    if _elementwise(key, variant):
        # three steps later the poisoned entries are still NaN: they did not freeze at a finite value
        for index_ in poison:
            assert torch.isnan(a[index_]), f"{key}: gradient {poison[index_]} at {index_} gave {float(a[index_])}"
        clean = torch.ones_like(a, dtype=torch.bool)
        for index_ in POISON:
            clean[index_] = False
        assert torch.isfinite(a[clean]).all() and torch.isfinite(b).all()
    else:
        # a group statistic spreads it, or the step is not a sign (dual-scaled l2 is gradient descent,
        # l1 moves one coordinate): the group still shows a non-finite value
        assert not torch.isfinite(a).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("foreach", [False, True])
def test_zeroth_order_sign_non_finite_loss_makes_every_entry_nan(bad: float, foreach: bool) -> None:
    """ZO-signSGD's estimate is one scalar per step: a non-finite loss reaches every entry."""
    for variant in DB["zo_sign_sgd"].variants:
        params = _params()
        opt = build("zo_sign_sgd", params, **variant, foreach=foreach)
        for step in range(3):

            def closure(step: int = step, params: list[torch.nn.Parameter] = params) -> Tensor:
                loss = sum((p**2).sum() for p in params)
                return loss * bad if step == 0 else loss

            opt.step(closure)
        assert all(torch.isnan(p).all() for p in params), variant


@pytest.mark.parametrize("foreach", [False, True])
def test_signum_and_lion_no_longer_freeze_behind_a_nan_buffer(foreach: bool) -> None:
    """The regression itself: before, the NaN entry stayed at its old value for good."""
    for cls in (steepest.Signum, steepest.Lion):
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        opt = cls([w], lr=0.1, foreach=foreach)
        w.grad = torch.tensor([1.0, math.nan])
        opt.step()
        assert math.isnan(float(w.detach()[1])) and float(w.detach()[0]) == pytest.approx(0.9)
