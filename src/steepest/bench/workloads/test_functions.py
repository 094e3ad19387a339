"""A 2-D sanity set: Rosenbrock, Beale and Booth, each minimised from a fixed hard start, summed.

The model holds one 2-D point per function; the loss is the sum of the three functions, each with minimum 0
(Rosenbrock at (1, 1), Beale at (3, 0.5), Booth at (1, 3)). The classic test functions of optimizer libraries'
trajectory plots (DeepOBS and pytorch-optimizer ship the same ones). Deterministic: there is no data, the seed
only perturbs the starting points slightly. ``evaluate`` reports each function's value as an extra metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import repeat

import torch
from torch import Tensor, nn

from steepest.bench.workloads._base import Budget, Size, Target, Workload, register_workload, seeded_generator


def rosenbrock(p: Tensor) -> Tensor:
    """``(1 - x)^2 + 100 (y - x^2)^2``; minimum 0 at (1, 1)."""
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def beale(p: Tensor) -> Tensor:
    """Beale's function; minimum 0 at (3, 0.5)."""
    x, y = p[0], p[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def booth(p: Tensor) -> Tensor:
    """``(x + 2y - 7)^2 + (2x + y - 5)^2``; minimum 0 at (1, 3)."""
    x, y = p[0], p[1]
    return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2


FUNCTIONS: dict[str, tuple[Callable[[Tensor], Tensor], tuple[float, float]]] = {
    "rosenbrock": (rosenbrock, (-1.5, 2.0)),
    "beale": (beale, (1.0, 1.5)),
    "booth": (booth, (-3.0, -3.0)),
}

_BUDGETS: dict[Size, Budget] = {
    "tiny": Budget(300, 50, 1),
    "quick": Budget(5000, 100, 1),
    "full": Budget(20000, 250, 1),
}
_TARGETS: dict[Size, float] = {"tiny": 1e-2, "quick": 1e-4, "full": 1e-6}


class _Points(nn.Module):
    def __init__(self, starts: dict[str, Tensor]) -> None:
        super().__init__()
        self.points = nn.ParameterDict({k: nn.Parameter(v) for k, v in starts.items()})


@register_workload
class TestFunctions2D(Workload):
    """Sum of Rosenbrock, Beale and Booth, one 2-D point each; target on the summed value."""

    name = "test_functions_2d"
    description = "2-D sanity set: Rosenbrock + Beale + Booth from hard starts (not scored by default)"
    extra_metrics = tuple(FUNCTIONS)
    __test__ = False  # not a pytest test class despite its name

    def __init__(self, size: Size = "quick") -> None:
        super().__init__(size)

    @property
    def target(self) -> Target:
        """Summed function value at most the size's threshold."""
        return Target("val_loss", _TARGETS[self.size], higher_is_better=False, set_by="fixed by design (f* = 0)")

    @property
    def budget(self) -> Budget:
        """The size's step budget (batch size 1: there is no data)."""
        return _BUDGETS[self.size]

    def init_model(self, seed: int) -> nn.Module:
        """The classic starting points, each perturbed by N(0, 0.01^2) from ``seed``."""
        gen = seeded_generator(seed)
        starts = {k: torch.tensor(start) + 0.01 * torch.randn(2, generator=gen) for k, (_, start) in FUNCTIONS.items()}
        return _Points(starts)

    def train_batches(self, seed: int) -> Iterator[None]:
        """No data: an endless stream of ``None``."""
        return repeat(None)

    def loss(self, model: nn.Module, batch: None) -> Tensor:
        """Sum of the three functions at their points."""
        assert isinstance(model, _Points)
        return sum((fn(model.points[k]) for k, (fn, _) in FUNCTIONS.items()), torch.zeros(()))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Each function's value, and their sum as ``train_loss`` and ``val_loss``."""
        assert isinstance(model, _Points)
        with torch.no_grad():
            values = {k: float(fn(model.points[k].double())) for k, (fn, _) in FUNCTIONS.items()}
        total = sum(values.values())
        return {"train_loss": total, "val_loss": total, **values}
