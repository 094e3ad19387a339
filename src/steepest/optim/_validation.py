"""Hyperparameter rules, checked at construction and whenever a param group is added.

Every keyword of an optimizer's ``__init__`` must have a rule: either a common one
below (``lr``, ``eps``, ``betas``, ...) or one the class declares in its
``hyperparameter_rules``. :class:`~steepest.optim._base.SteepestOptimizer` enforces
that when the class is defined, so a new optimizer cannot forget to validate a knob.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch


class Rule(ABC):
    """A check on one hyperparameter value; raises ``ValueError`` naming it."""

    @abstractmethod
    def check(self, owner: str, name: str, value: Any) -> None:
        """Raise ``ValueError`` if ``value`` is not allowed for ``name``."""

    @abstractmethod
    def describe(self) -> str:
        """Human-readable statement of the allowed values."""

    def _fail(self, owner: str, name: str, value: Any) -> None:
        raise ValueError(f"{owner}: invalid {name}={value!r}; expected {self.describe()}")


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Interval(Rule):
    """A finite real number in an interval; ``low_open``/``high_open`` exclude the ends."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    #: Also accept a 1-element real floating tensor whose value lies in the interval (torch's
    #: optimizers take ``lr=torch.tensor(1e-3)``, and schedulers then fill it in place).
    tensor_ok: bool = False

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the interval (NaN and infinities never do)."""
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def check(self, owner: str, name: str, value: Any) -> None:
        """Raise ``ValueError`` unless ``value`` is a real number (or allowed tensor) in the interval."""
        if self.tensor_ok and isinstance(value, torch.Tensor):
            if value.numel() != 1 or not value.is_floating_point() or value.requires_grad:
                raise ValueError(
                    f"{owner}: invalid {name}: a tensor {name} must be a 1-element floating point tensor "
                    f"without grad, got shape {tuple(value.shape)} and dtype {value.dtype}"
                )
            if not self.contains(float(value.detach().reshape(()).item())):
                self._fail(owner, name, value)
            return
        if not _is_real(value) or not self.contains(float(value)):
            self._fail(owner, name, value)

    def describe(self) -> str:
        """Interval in bracket notation."""
        left = "(" if self.low_open or self.low == -math.inf else "["
        right = ")" if self.high_open or self.high == math.inf else "]"
        tensor = " (or a 1-element tensor)" if self.tensor_ok else ""
        return f"a number in {left}{self.low}, {self.high}{right}{tensor}"


@dataclass(frozen=True)
class Integer(Rule):
    """An integer ``>= low``."""

    low: int = 0

    def check(self, owner: str, name: str, value: Any) -> None:
        """Raise ``ValueError`` unless ``value`` is an int ``>= low``."""
        if isinstance(value, bool) or not isinstance(value, int) or value < self.low:
            self._fail(owner, name, value)

    def describe(self) -> str:
        """Lower bound of the integer."""
        return f"an integer >= {self.low}"


@dataclass(frozen=True)
class OneOf(Rule):
    """One of a fixed set of values."""

    choices: tuple[Any, ...]

    def check(self, owner: str, name: str, value: Any) -> None:
        """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
        if value not in self.choices or isinstance(value, bool) != isinstance(self.choices[0], bool):
            self._fail(owner, name, value)

    def describe(self) -> str:
        """The allowed values."""
        return "one of " + ", ".join(repr(c) for c in self.choices)


@dataclass(frozen=True)
class Boolean(Rule):
    """``True`` or ``False`` (or ``None`` when ``allow_none``)."""

    allow_none: bool = False

    def check(self, owner: str, name: str, value: Any) -> None:
        """Raise ``ValueError`` unless ``value`` is a bool (or None when allowed)."""
        if not (isinstance(value, bool) or (self.allow_none and value is None)):
            self._fail(owner, name, value)

    def describe(self) -> str:
        """True/False, maybe None."""
        return "True, False or None" if self.allow_none else "True or False"


@dataclass(frozen=True)
class Optional(Rule):
    """``None`` or a value accepted by ``inner``."""

    inner: Rule

    def check(self, owner: str, name: str, value: Any) -> None:
        """Accept ``None``; otherwise defer to ``inner``."""
        if value is not None:
            try:
                self.inner.check(owner, name, value)
            except ValueError:
                self._fail(owner, name, value)

    def describe(self) -> str:
        """None or the inner rule."""
        return f"None or {self.inner.describe()}"


@dataclass(frozen=True)
class Tuple(Rule):
    """A tuple/list of fixed length whose items each satisfy ``item``."""

    length: int
    item: Rule

    def check(self, owner: str, name: str, value: Any) -> None:
        """Raise ``ValueError`` unless ``value`` has the length and valid items."""
        if not isinstance(value, tuple | list) or len(value) != self.length:
            self._fail(owner, name, value)
        for i, v in enumerate(value):
            try:
                self.item.check(owner, f"{name}[{i}]", v)
            except ValueError:
                self._fail(owner, name, value)

    def describe(self) -> str:
        """Length and item rule."""
        return f"{self.length} values, each {self.item.describe()}"


@dataclass(frozen=True)
class Strings(Rule):
    """A tuple or list of strings, of any length (name patterns)."""

    def check(self, owner: str, name: str, value: Any) -> None:
        """Raise ``ValueError`` unless ``value`` is a tuple/list of ``str``."""
        if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
            self._fail(owner, name, value)

    def describe(self) -> str:
        """A sequence of strings."""
        return "a tuple of strings"


NON_NEGATIVE = Interval(0.0)
POSITIVE = Interval(0.0, low_open=True)
UNIT_OPEN = Interval(0.0, 1.0, high_open=True)  # decay rates: [0, 1)

#: Rules shared by every optimizer, keyed by hyperparameter name.
COMMON_RULES: Mapping[str, Rule] = {
    "lr": Interval(0.0, tensor_ok=True),
    "eps": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
    "momentum": UNIT_OPEN,
    "beta": UNIT_OPEN,
    "dampening": Interval(0.0, 1.0),
    "betas": Tuple(2, UNIT_OPEN),
    "maximize": Boolean(),
    "foreach": Boolean(allow_none=True),
    "fused": Boolean(allow_none=True),
}


def is_real_valued(rule: Rule) -> bool:
    """Whether ``rule`` admits real numbers (an interval, optional or not, or a tuple of them)."""
    if isinstance(rule, Optional | Tuple):
        return is_real_valued(rule.inner if isinstance(rule, Optional) else rule.item)
    return isinstance(rule, Interval)


def check_hyperparameters(owner: str, rules: Mapping[str, Rule], values: Mapping[str, Any]) -> None:
    """Check every ``values`` entry that has a rule; entries without one are left alone.

    Param groups may carry user keys (torch allows it), so only known names are checked.
    """
    for name, value in values.items():
        rule = rules.get(name)
        if rule is not None:
            rule.check(owner, name, value)
