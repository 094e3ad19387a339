"""Schedules: hand-computed values, torch scheduler integration, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import steepest
from steepest.schedules import (
    linear_decay,
    median_filter,
    refined_multipliers,
    refined_schedule,
    scale_lr_for_batch_size,
    scaling_rule,
    warmup_stable_decay,
    wsd_multiplier,
)


def _lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _opt(lr: float = 1.0) -> torch.optim.Optimizer:
    return steepest.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_refined_schedule_hand_computed() -> None:
    # norms (1, 2, 1, 0.5): inverse squares (1, .25, 1, 4), tails (5.25, 5, 4, 0), products (5.25, 1.25, 4, 0).
    w = refined_multipliers([1.0, 2.0, 1.0, 0.5])
    torch.testing.assert_close(w, torch.tensor([1.0, 1.25 / 5.25, 4 / 5.25, 0.0], dtype=torch.float64))
    # power 1 (Adam-like, l1 norms): inverses (1, .5, 1, 2), tails (3.5, 3, 2, 0).
    w1 = refined_multipliers([1.0, 2.0, 1.0, 0.5], power=1)
    torch.testing.assert_close(w1, torch.tensor([1.0, 1.5 / 3.5, 2 / 3.5, 0.0], dtype=torch.float64))


def test_constant_norms_refine_to_linear_decay() -> None:
    w = refined_multipliers([3.0] * 11)
    torch.testing.assert_close(w, torch.linspace(1.0, 0.0, 11, dtype=torch.float64))


def test_rising_norms_give_warmup_and_fast_annealing() -> None:
    # Norms that fall then rise at the end (as the paper observes): the schedule warms up and anneals early.
    norms = [4.0 - 3.0 * t / 50 for t in range(50)] + [1.0 + 3.0 * t / 50 for t in range(50)]
    w = refined_multipliers(norms)
    peak = int(torch.argmax(w))
    assert 0 < peak < 60 and float(w[0]) < 0.5


def test_median_filter_smooths_a_spike() -> None:
    values = torch.tensor([1.0, 1.0, 50.0, 1.0, 1.0])
    assert median_filter(values, 3).tolist() == [1.0] * 5
    smoothed = refined_multipliers([1.0, 1.0, 50.0, 1.0, 1.0], tau=0.6)
    torch.testing.assert_close(smoothed, refined_multipliers([1.0] * 5))


def test_refined_schedule_drives_the_optimizer() -> None:
    sched = refined_schedule(_opt(0.5), [1.0, 2.0, 1.0, 0.5])
    torch.testing.assert_close(
        torch.tensor(_lrs(sched, 5)), 0.5 * torch.tensor([1.0, 1.25 / 5.25, 4 / 5.25, 0.0, 0.0]), rtol=1e-12, atol=0
    )


def test_linear_decay_with_warmup() -> None:
    lrs = _lrs(linear_decay(_opt(2.0), total_steps=6, warmup_steps=2), 8)
    expected = [1.0, 2.0, 2.0, 1.5, 1.0, 0.5, 0.0, 0.0]
    assert lrs == pytest.approx(expected)


def test_wsd_shapes() -> None:
    assert [wsd_multiplier(t, 10, 0, 4, "linear") for t in (6, 8, 10)] == pytest.approx([1.0, 0.5, 0.0])
    assert wsd_multiplier(8, 10, 0, 4, "cosine") == pytest.approx(0.5)
    assert wsd_multiplier(7, 10, 0, 4, "1-sqrt") == pytest.approx(1 - math.sqrt(0.25))
    lrs = _lrs(warmup_stable_decay(_opt(), 10, warmup_steps=2, decay_steps=4), 10)
    assert lrs[:2] == pytest.approx([0.5, 1.0]) and lrs[2:6] == pytest.approx([1.0] * 4) and lrs[-1] < lrs[6]


def test_schedules_round_trip_through_state_dict() -> None:
    sched = warmup_stable_decay(_opt(), 10, warmup_steps=2, decay_steps=4)
    _lrs(sched, 3)
    state = sched.state_dict()
    again = warmup_stable_decay(_opt(), 10, warmup_steps=2, decay_steps=4)
    again.optimizer.load_state_dict(sched.optimizer.state_dict())  # the current lr lives in the optimizer
    again.load_state_dict(state)
    assert _lrs(again, 7) == _lrs(sched, 7)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: linear_decay(_opt(), 0), "total_steps"),
        (lambda: linear_decay(_opt(), 5, warmup_steps=5), "warmup_steps"),
        (lambda: linear_decay(_opt(), 5, final_fraction=2.0), "final_fraction"),
        (lambda: warmup_stable_decay(_opt(), 5, 2, 4), "exceeds"),
        (lambda: warmup_stable_decay(_opt(), 5, 0, 2, "step"), "decay_shape"),
        (lambda: refined_multipliers([1.0]), "at least two"),
        (lambda: refined_multipliers([1.0, 0.0]), "positive"),
        (lambda: refined_multipliers([1.0, 2.0], power=3), "power"),
        (lambda: scale_lr_for_batch_size(0.1, 0, 4), "batch sizes"),
        (lambda: scale_lr_for_batch_size(0.1, 2, 4, "cube"), "rule"),
    ],
)
def test_bad_input_raises(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        call()


def test_batch_scaling_rules() -> None:
    assert scale_lr_for_batch_size(0.1, 32, 128) == pytest.approx(0.4)
    assert scale_lr_for_batch_size(1e-3, 32, 128, "sqrt") == pytest.approx(2e-3)
    assert scaling_rule("sgd") == "linear" and scaling_rule("adamw") == "sqrt" and scaling_rule("lion") == "sqrt"
