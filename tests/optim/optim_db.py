"""One entry per registered optimizer: what the conformance matrix feeds it.

Adding an optimizer to the registry without an entry here fails ``test_db_covers_registry``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErrorInput:
    """Constructor keywords that must raise ``error`` with a message matching ``match``."""

    kwargs: dict[str, Any]
    error: type[Exception] = ValueError
    match: str = ""


@dataclass(frozen=True)
class OptimSpec:
    """How the matrix exercises one optimizer.

    Attributes:
        key: registry key.
        variants: hyperparameter sets every behavioural test runs with (cover each branch:
            weight decay on, options toggled). The first one is the plain default-like set.
        quadratic: hyperparameters under which it converges on the 20-d quadratic in
            ``steps`` steps with a cosine schedule to 0.
        logistic: the same for the logistic regression.
        steps: steps for the convergence tests.
        error_inputs: bad constructor inputs beyond the common ``lr=-1``.
        moves_with_lr_zero: whether parameters can change when ``lr == 0``.
    """

    key: str
    variants: tuple[dict[str, Any], ...]
    quadratic: dict[str, Any]
    logistic: dict[str, Any]
    steps: int = 300
    error_inputs: tuple[ErrorInput, ...] = ()
    moves_with_lr_zero: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


_BETAS_ERRORS = (
    ErrorInput({"betas": (1.0, 0.9)}, match="betas"),
    ErrorInput({"betas": (0.9,)}, match="betas"),
    ErrorInput({"weight_decay": -0.1}, match="weight_decay"),
)

DB: dict[str, OptimSpec] = {
    spec.key: spec
    for spec in (
        OptimSpec(
            "sgd",
            variants=({"lr": 0.05}, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "nesterov": True}),
            quadratic={"lr": 0.15, "momentum": 0.5},
            logistic={"lr": 0.5, "momentum": 0.9},
            error_inputs=(ErrorInput({"momentum": -0.5}, match="momentum"),),
        ),
        OptimSpec(
            "adamw",
            variants=({"lr": 0.01}, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
            quadratic={"lr": 0.1, "weight_decay": 0.0},
            logistic={"lr": 0.05, "weight_decay": 0.0},
            error_inputs=(ErrorInput({"betas": (1.5, 0.9)}, match="beta"),),
        ),
        OptimSpec(
            "lion",
            variants=({"lr": 0.01}, {"lr": 0.01, "betas": (0.95, 0.98), "weight_decay": 0.5}),
            quadratic={"lr": 0.03},
            logistic={"lr": 0.01},
            error_inputs=_BETAS_ERRORS,
        ),
    )
}
