"""Every optimizer takes the library's closure and a torch-style one, and steps the same with both.

The library's closure back-propagates only ``if torch.is_grad_enabled()``; PyTorch's docs write
closures (for LBFGS) that call ``loss.backward()`` unconditionally. Optimizers that evaluate the
loss alone (line-search trials, zeroth-order estimates) call the closure under ``no_grad``,
where such a closure's ``backward()`` raises: they must retry it with gradients, keep the
trajectory, and leave ``.grad`` as the documented closure leaves it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import steepest
from steepest.optim._registry import REGISTRY
from tests.optim.optim_db import DB, build
from tests.optim.problems import SumOfQuadratics, make_closure, make_params

KEYS = sorted(REGISTRY)
ZO_KEYS = sorted(k for k in KEYS if REGISTRY[k].capabilities.gradient_free)
LINE_SEARCH_KEYS = ("sls", "sls_adam", "ponos")


def _torch_style(opt: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor], create_graph: bool = False):  # type: ignore[no-untyped-def]
    """A closure as PyTorch's LBFGS docs write one: zero_grad, loss, backward, return loss."""

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward(create_graph=create_graph)
        return loss

    return closure


def _grads(params: list[torch.Tensor]) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.detach().clone() for p in params]


def _run(key: str, style: str, steps: int = 3) -> tuple[list[list[torch.Tensor]], list[list[Any]], list[float]]:
    problem = SumOfQuadratics()
    params = make_params()
    opt = build(key, params, **DB[key].variants[0])
    caps = opt.capabilities  # type: ignore[attr-defined]
    if style == "documented":
        closure = make_closure(params, lambda: problem.loss(params), create_graph=caps.needs_create_graph)
    else:
        closure = _torch_style(opt, lambda: problem.loss(params), create_graph=caps.needs_create_graph)
    trajectory, grads, losses = [], [], []
    for _ in range(steps):
        loss = opt.step(closure)
        losses.append(float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss))
        trajectory.append([p.detach().clone() for p in params])
        grads.append(_grads(params))
    return trajectory, grads, losses


@pytest.mark.parametrize("key", KEYS)
def test_torch_style_closure_gives_the_same_trajectory(key: str) -> None:
    """Same parameters, same returned losses and the same ``.grad`` after every step, both closure styles."""
    ours, our_grads, our_losses = _run(key, "documented")
    theirs, their_grads, their_losses = _run(key, "torch")
    assert our_losses == pytest.approx(their_losses, rel=1e-12, abs=1e-14)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14, msg=f"{key} step {step}")
    for step, (a, b) in enumerate(zip(our_grads, their_grads, strict=True)):
        for x, y in zip(a, b, strict=True):
            assert (x is None) == (y is None), f"{key} step {step}: .grad set by one style only"
            if x is not None and y is not None:
                torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14, msg=f"{key} step {step} grad")
    assert any(not torch.equal(x, y) for x, y in zip(ours[-1], make_params(), strict=True)), "nothing moved"


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("key", ZO_KEYS)
def test_zeroth_order_steps_leave_grad_as_the_user_had_it(key: str, set_to_none: bool) -> None:
    """A torch-style closure zeroes and refills ``.grad`` at every call; the step leaves the user's alone."""
    problem = SumOfQuadratics()
    params = make_params()
    opt = build(key, params, **DB[key].variants[0])
    sentinels = [torch.full_like(p, 7.0) for p in params]
    for p, s in zip(params, sentinels, strict=True):
        p.grad = s

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=set_to_none)  # False: zeroes whatever .grad holds, in place
        loss = problem.loss(params)
        loss.backward()
        return loss

    before = [p.detach().clone() for p in params]
    opt.step(closure)
    assert any(not torch.equal(p.detach(), b) for p, b in zip(params, before, strict=True))
    for p, s in zip(params, sentinels, strict=True):
        assert p.grad is s
        assert bool((s == 7.0).all())


@pytest.mark.parametrize("key", LINE_SEARCH_KEYS)
def test_line_search_trials_leave_the_starting_gradient(key: str) -> None:
    """After a line-search step ``.grad`` is the gradient at the step's start, with either closure style."""
    problem = SumOfQuadratics()
    for style in ("documented", "torch"):
        params = make_params()
        opt = build(key, params, **DB[key].variants[0])
        closure = (
            make_closure(params, lambda params=params: problem.loss(params))
            if style == "documented"
            else _torch_style(opt, lambda params=params: problem.loss(params))
        )
        with torch.enable_grad():
            make_closure(params, lambda params=params: problem.loss(params))()
        expected = _grads(params)
        opt.step(closure)
        state = opt.state[params[0]]
        assert float(state["n_forwards"]) > float(state["n_backwards"]) or style == "torch"
        for g, e in zip(_grads(params), expected, strict=True):
            assert g is not None and e is not None
            torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_torch_style_trials_cost_a_backward_each() -> None:
    """The documented cost: one first attempt stopped at backward(), then a backward per trial."""
    problem = SumOfQuadratics()
    counts = {}
    for style in ("documented", "torch"):
        params = make_params()
        opt = steepest.SLS(params, init_step_size=100.0)  # backtracks: several trials per step
        closure = (
            make_closure(params, lambda params=params: problem.loss(params))
            if style == "documented"
            else _torch_style(opt, lambda params=params: problem.loss(params))
        )
        opt.step(closure)
        state = opt.state[params[0]]
        counts[style] = (float(state["n_forwards"]), float(state["n_backwards"]))
    forwards, backwards = counts["documented"]
    trials = forwards - 1
    assert trials > 1 and backwards == 1
    assert counts["torch"] == (forwards + 1, 1 + trials)


def _dropout_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 1)).double()
    return model, torch.randn(32, 5, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)


@pytest.mark.parametrize("key", ["sls", "mezo"])
def test_torch_style_closure_sees_the_same_dropout_masks(key: str) -> None:
    """The retry after the failed no_grad attempt draws the masks that attempt drew."""
    results = []
    for style in ("documented", "torch"):
        model, x, y = _dropout_model()
        params = list(model.parameters())
        opt = steepest.create_optimizer(key, params, **({"lr": 0.01, "eps": 1e-3} if key == "mezo" else {}))

        def loss_fn(model: nn.Module = model, x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
            return nn.functional.mse_loss(model(x), y)

        closure = make_closure(params, loss_fn) if style == "documented" else _torch_style(opt, loss_fn)
        torch.manual_seed(1)
        for _ in range(3):
            opt.step(closure)
        results.append(([p.detach().clone() for p in params], torch.rand(3)))
    (ours, our_rng), (theirs, their_rng) = results
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert torch.equal(our_rng, their_rng), "the RNG stream must not depend on the closure style"


def test_blockllm_takes_a_closure_that_returns_none() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    opt = steepest.BlockLLM(model.named_parameters(), sparsity=0.5, update_freq=2, num_probes=0)
    before = [p.detach().clone() for p in model.parameters()]

    def closure() -> None:
        opt.zero_grad()
        model(torch.ones(2, 4)).pow(2).mean().backward()

    assert opt.step(closure) is None
    assert any(not torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before, strict=True))
    with pytest.warns(UserWarning, match="record_loss"):  # no loss recorded: the selection stays
        assert opt.step(closure) is None
