"""Lion against lion-pytorch 0.2.5 (math identical to google/automl's Lion)."""

from __future__ import annotations

import pytest
from lion_pytorch import Lion as ReferenceLion

import steepest
from tests.reference._compare import assert_same_trajectory


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 1e-3},
        {"lr": 3e-3, "betas": (0.95, 0.98), "weight_decay": 0.3},
    ],
)
def test_lion_matches_lion_pytorch(kwargs: dict, foreach: bool) -> None:
    assert_same_trajectory(
        lambda p: steepest.Lion(p, **kwargs, foreach=foreach),
        lambda p: ReferenceLion(p, **kwargs, use_triton=False, decoupled_weight_decay=False),
        steps=40,
        rtol=0.0,
        atol=1e-13,
    )


def test_lion_matches_with_two_param_groups() -> None:
    def groups(params: list) -> list[dict]:
        return [{"params": params[:2]}, {"params": params[2:], "lr": 5e-4, "weight_decay": 0.1}]

    assert_same_trajectory(
        lambda p: steepest.Lion(p, lr=2e-3),
        lambda p: ReferenceLion(p, lr=2e-3),
        groups=groups,
        rtol=0.0,
        atol=1e-13,
    )
