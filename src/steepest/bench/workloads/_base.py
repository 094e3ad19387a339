"""The workload contract every benchmark workload follows (AlgoPerf's split of model, data, loss, eval).

A workload is deterministic given a seed: the same seed gives the same initial model, the same batches
in the same order and the same evaluation. Data comes from code or from an installed package; nothing is
downloaded at run time.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import Tensor, nn

Size = Literal["tiny", "quick", "full"]
SIZES: tuple[Size, ...] = ("tiny", "quick", "full")


@dataclass(frozen=True)
class Target:
    """When a run counts as solved: ``metric`` (a key of :meth:`Workload.evaluate`) reaches ``value``.

    Attributes:
        metric: the evaluation key compared with ``value`` (e.g. ``"val_loss"`` or ``"val_accuracy"``).
        value: the threshold.
        higher_is_better: ``True`` for accuracies, ``False`` for losses.
        set_by: how the value was set (optimizer, tuned learning rate, seeds, library versions), so a target
            can be recalibrated and compared.
    """

    metric: str
    value: float
    higher_is_better: bool = False
    set_by: str = ""

    def reached(self, metrics: dict[str, float]) -> bool:
        """Whether ``metrics`` meets the target."""
        got = metrics[self.metric]
        return got >= self.value if self.higher_is_better else got <= self.value


@dataclass(frozen=True)
class Budget:
    """How long a run may train and how often it is evaluated (evaluation is untimed).

    Attributes:
        max_steps: optimizer steps after which the run stops.
        eval_every: steps between evaluations (step 0 and the last step are always evaluated).
        batch_size: examples per step.
    """

    max_steps: int
    eval_every: int
    batch_size: int


class Workload(ABC):
    """A model, its data, a loss, an evaluation metric, a target and a step budget, at a given size.

    Subclasses set ``name`` and ``description`` and implement the abstract methods; ``sizes`` maps each
    of ``"tiny"`` (for tests: seconds), ``"quick"`` (default suite: about a minute with a tuned baseline)
    and ``"full"`` to the size-dependent settings the subclass reads in ``__init__``.

    Register a subclass with :func:`register_workload`. Keep ``__init__`` cheap (build data on first use, e.g.
    in a ``functools.cached_property``): ``steepest bench list`` instantiates every size to show targets and
    budgets, and the runner caches one instance per (name, size) per process.

    Attributes:
        name: registry key of the workload (``"zipf_softmax"``, ``"char_lm"``, ...).
        description: one line for ``steepest bench list``.
        size: the selected size.
        target: the target of this size.
        budget: the step budget of this size.
        extra_metrics: names of per-group metrics :meth:`evaluate` reports beyond the standard ones (e.g.
            the loss per frequency group of the heavy-tailed workload), for the report.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    extra_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, size: Size = "quick") -> None:
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r} for workload {self.name!r}; expected one of {SIZES}")
        self.size: Size = size

    @property
    @abstractmethod
    def target(self) -> Target:
        """The target of this size."""

    @property
    @abstractmethod
    def budget(self) -> Budget:
        """The step budget of this size."""

    @abstractmethod
    def init_model(self, seed: int) -> nn.Module:
        """A freshly initialised model (float32, CPU), identical for identical seeds."""

    @abstractmethod
    def train_batches(self, seed: int) -> Iterator[Any]:
        """An endless iterator of training batches in a seed-determined order."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        """The scalar training loss of ``model`` on ``batch`` (differentiable)."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Untimed evaluation: at least ``train_loss``, ``val_loss`` and the target's metric, plus extras."""

    def model_facts(self) -> dict[str, Any]:
        """Model facts some optimizers need (Adam-mini's ``dim``/``n_heads``); empty when none apply."""
        return {}

    def param_groups(self, model: nn.Module, optimizer_key: str) -> Any:
        """What to pass an optimizer's constructor: by default ``model.parameters()``.

        Workloads override this where an optimizer needs structure (named parameters, projected groups,
        SCALE's last layer); the runner calls it for every optimizer.
        """
        return model.parameters()


@dataclass
class WorkloadInfo:
    """Registry row for ``steepest bench list``: key, description and the class."""

    name: str
    description: str
    cls: type[Workload]
    tags: tuple[str, ...] = field(default_factory=tuple)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (workloads never use the global RNG)."""
    return torch.Generator().manual_seed(seed)


def epoch_batches(tensors: tuple[Tensor, ...], batch_size: int, seed: int) -> Iterator[tuple[Tensor, ...]]:
    """Endless minibatches of the rows of ``tensors``: a fresh seeded permutation each epoch, no replacement.

    The order comes from ``seeded_generator(seed + 1)``; the last partial batch of an epoch is dropped.
    """
    gen = seeded_generator(seed + 1)
    n = int(tensors[0].shape[0])
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield tuple(t[idx] for t in tensors)


WORKLOADS: dict[str, type[Workload]] = {}
"""Registered workload classes by key; fill it with :func:`register_workload` (complete once
:func:`workload_names` or :func:`get_workload` has been called)."""

_W = TypeVar("_W", bound=type[Workload])


def register_workload(cls: _W) -> _W:
    """Class decorator adding a :class:`Workload` subclass to :data:`WORKLOADS` under ``cls.name``.

    Raises:
        ValueError: if another class is already registered under the same name.
    """
    name = cls.name
    if name in WORKLOADS and WORKLOADS[name] is not cls:
        raise ValueError(f"workload {name!r} is already registered by {WORKLOADS[name].__qualname__}")
    WORKLOADS[name] = cls
    return cls


def workload_names() -> list[str]:
    """Sorted keys of every registered workload (after importing the built-in workload modules)."""
    _load_builtin()
    return sorted(WORKLOADS)


def get_workload(name: str, size: Size = "quick") -> Workload:
    """An instance of the workload registered as ``name`` at ``size``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or an unknown size.
    """
    _load_builtin()
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; valid workloads: {', '.join(sorted(WORKLOADS)) or '(none)'}")
    return WORKLOADS[name](size)


_loaded = False


def _load_builtin() -> None:
    """Import every public module of this package once; each registers its workloads."""
    global _loaded
    if _loaded:
        return
    import steepest.bench.workloads as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")
    _loaded = True
