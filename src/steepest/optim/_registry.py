"""The optimizer registry: one explicit entry per optimizer.

Each :class:`RegistryEntry` names the class, its family tags, its paper, a one-line update
rule, and the hyperparameter search space the benchmark tunes over. Entries are written out
by hand (no import-time discovery) so the registry reads as the library's table of contents.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from steepest.optim._base import Capabilities
from steepest.optim.baselines import SGD, AdamW
from steepest.optim.lion import Lion

#: Family tags. Algorithms may carry several.
FAMILIES = ("baseline", "sign", "adaptive", "layerwise", "memory", "curvature", "step_size", "zeroth_order")


@dataclass(frozen=True)
class Paper:
    """Where an algorithm was published."""

    title: str
    authors: str
    year: int
    arxiv: str | None = None
    venue: str | None = None

    def cite(self) -> str:
        """Short citation: authors, title, venue, year, arXiv id."""
        parts = [self.authors, f'"{self.title}"']
        if self.venue:
            parts.append(self.venue)
        parts.append(str(self.year))
        if self.arxiv:
            parts.append(f"arXiv:{self.arxiv}")
        return ", ".join(parts)


@dataclass(frozen=True)
class SearchDim:
    """One hyperparameter's tuning range: ``log`` uniform, ``uniform`` or ``choice``."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("log", "uniform", "choice"):
            raise ValueError(f"unknown search kind {self.kind!r}")


def log_uniform(low: float, high: float) -> SearchDim:
    """A log-uniform range ``[low, high]``."""
    return SearchDim("log", low, high)


def uniform(low: float, high: float) -> SearchDim:
    """A uniform range ``[low, high]``."""
    return SearchDim("uniform", low, high)


def choice(*choices: Any) -> SearchDim:
    """A categorical choice."""
    return SearchDim("choice", choices=tuple(choices))


@dataclass(frozen=True)
class RegistryEntry:
    """One optimizer in the registry."""

    key: str
    cls: type[Optimizer]
    families: tuple[str, ...]
    paper: Paper
    update_rule: str
    search_space: Mapping[str, SearchDim] = field(default_factory=dict)
    #: Hyperparameters that train a small MLP well (used by ``steepest demo``); lr at least.
    suggested: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.families) - set(FAMILIES)
        if unknown:
            raise ValueError(f"{self.key}: unknown families {sorted(unknown)}")

    @property
    def capabilities(self) -> Capabilities:
        """What the optimizer needs and supports."""
        return getattr(self.cls, "capabilities", Capabilities())

    def defaults(self) -> dict[str, Any]:
        """Hyperparameter defaults, read from the class signature."""
        signature = inspect.signature(self.cls.__init__)
        return {
            name: p.default
            for name, p in list(signature.parameters.items())[2:]
            if p.default is not p.empty and p.kind is not p.VAR_KEYWORD
        }

    def state_description(self) -> str:
        """What the optimizer keeps per parameter."""
        describe = getattr(self.cls, "describe_state", None)
        return describe() if describe is not None else "see the class docstring"


_ENTRIES: tuple[RegistryEntry, ...] = (
    RegistryEntry(
        key="sgd",
        cls=SGD,
        families=("baseline",),
        paper=Paper("A Stochastic Approximation Method", "Robbins, Monro", 1951, venue="Ann. Math. Statist."),
        update_rule="b <- mu*b + g; p <- p - lr*b (torch.optim.SGD)",
        search_space={"lr": log_uniform(1e-3, 1.0), "momentum": choice(0.0, 0.9)},
        suggested={"lr": 0.1, "momentum": 0.9},
    ),
    RegistryEntry(
        key="adamw",
        cls=AdamW,
        families=("baseline", "adaptive"),
        paper=Paper("Decoupled Weight Decay Regularization", "Loshchilov, Hutter", 2019, "1711.05101", "ICLR"),
        update_rule="p <- p(1 - lr*wd) - lr * m_hat / (sqrt(v_hat) + eps) (torch.optim.AdamW)",
        search_space={"lr": log_uniform(1e-4, 1e-1), "weight_decay": log_uniform(1e-5, 1e-1)},
        suggested={"lr": 1e-3, "weight_decay": 1e-2},
    ),
    RegistryEntry(
        key="lion",
        cls=Lion,
        families=("sign",),
        paper=Paper(
            "Symbolic Discovery of Optimization Algorithms", "Chen et al.", 2023, "2302.06675", "NeurIPS"
        ),
        update_rule="p <- p(1 - lr*wd) - lr*sign(b1*m + (1-b1)*g); m <- b2*m + (1-b2)*g",
        search_space={"lr": log_uniform(1e-5, 1e-2), "weight_decay": log_uniform(1e-4, 1.0)},
        suggested={"lr": 3e-4, "weight_decay": 0.1},
    ),
)

REGISTRY: Mapping[str, RegistryEntry] = {entry.key: entry for entry in _ENTRIES}


def _entry(name: str) -> RegistryEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown optimizer {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def list_optimizers(family: str | None = None) -> list[str]:
    """Registry keys, optionally only those tagged with ``family``."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return [key for key, e in REGISTRY.items() if family is None or family in e.families]


def optimizer_info(name: str) -> RegistryEntry:
    """The registry entry for ``name``: class, paper, update rule, defaults, state, needs."""
    return _entry(name)


def create_optimizer(
    name: str, params: Iterable[Tensor] | Iterable[dict[str, Any]], **hyperparameters: Any
) -> Optimizer:
    """Build the optimizer registered as ``name``.

    Raises:
        KeyError: ``name`` is not registered.
        TypeError: a hyperparameter name the optimizer does not take.
        ValueError: a hyperparameter value out of range.
    """
    entry = _entry(name)
    known = entry.defaults()
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise TypeError(f"{name}: unknown hyperparameter(s) {unknown}; accepted: {', '.join(known)}")
    return entry.cls(params, **hyperparameters)
