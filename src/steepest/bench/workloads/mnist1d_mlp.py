"""A ReLU MLP on MNIST-1D, generated locally by the ``mnist1d`` package (never downloaded).

MNIST-1D: Greydanus, Kobak, "Scaling Down Deep Learning with MNIST-1D", ICML 2024, arXiv:2011.14439. Ten
1-D digit templates are padded, sheared, scaled, translated, blurred with correlated noise and sampled to length
40. The data set is built with the package's ``make_dataset`` from its default arguments (seed 42; only
``num_samples`` changes with the size); ``get_dataset`` is never called, as it downloads a pickle by default.
The arrays are cached under the user cache directory (:mod:`steepest.bench.workloads._cache`), so the package
is only imported the first time a size is built. Inputs are standardised with the training mean and standard
deviation.

Model: ``40 -> 128 -> 128 -> 10`` ReLU MLP with PyTorch's default ``nn.Linear`` initialisation drawn from the
run seed; cross-entropy on shuffled minibatches (reshuffled every epoch, order from the seed). The paper's MLP
reaches about 68% test accuracy; logistic regression about 32%.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steepest._extras import require
from steepest.bench.workloads._base import Budget, Size, Target, register_workload
from steepest.bench.workloads._cache import Arrays, cached_arrays
from steepest.bench.workloads._classification import ClassificationWorkload


@dataclass(frozen=True)
class _MLPConfig:
    samples: int  # MNIST-1D num_samples (80% train, 20% validation)
    width: int
    target: float
    budget: Budget


_CONFIGS: dict[Size, _MLPConfig] = {
    "tiny": _MLPConfig(1000, 32, 0.3, Budget(150, 25, 64)),
    "quick": _MLPConfig(5000, 128, 0.65, Budget(3000, 100, 128)),
    "full": _MLPConfig(20000, 256, 0.7, Budget(20000, 500, 128)),
}

QUICK_SET_BY = (
    "AdamW (wd 1e-2) lr 1e-2 reaches 0.65 at step 600 (3.3 s; best 0.674 in 6000 steps), SGD momentum 0.9 lr 0.1 "
    "at step 1000 (3.8 s; best 0.676); evaluated every 200 steps; seed 0; "
    "steepest 0.1.0, torch 2.13.0+cpu, 1 thread on the shared 2-core machine; benchmarks/calibrate_workloads.py"
)
_OTHER_SET_BY = "tiny: fixed for tests; full: provisional"


def mnist1d_arrays(num_samples: int) -> Arrays:
    """MNIST-1D from ``mnist1d.data.make_dataset`` with default arguments but ``num_samples`` (cached).

    Returns ``x``, ``y`` (training) and ``x_test``, ``y_test`` (validation) as float32 / int64 arrays. The
    generator seeds NumPy's and Python's global RNGs; their states are restored afterwards.
    """

    def build() -> Arrays:
        # heavy import (matplotlib): only on a cache miss
        mnist1d_data = require("mnist1d.data", "the mnist1d_mlp workload")
        get_dataset_args, make_dataset = mnist1d_data.get_dataset_args, mnist1d_data.make_dataset

        args = get_dataset_args()
        args.num_samples = num_samples
        # make_dataset seeds the legacy global RNGs itself; save and restore them around it
        np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
        try:
            data: dict[str, Any] = make_dataset(args)
        finally:
            np.random.set_state(np_state)  # noqa: NPY002
            random.setstate(py_state)
        return {
            "x": np.asarray(data["x"], dtype=np.float32),
            "y": np.asarray(data["y"], dtype=np.int64),
            "x_test": np.asarray(data["x_test"], dtype=np.float32),
            "y_test": np.asarray(data["y_test"], dtype=np.int64),
        }

    return cached_arrays("mnist1d", {"num_samples": num_samples, "version": 1}, build)


class MLP(nn.Module):
    """``in -> width -> width -> classes`` with ReLU activations."""

    def __init__(self, inputs: int, width: int, classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(inputs, width)
        self.fc2 = nn.Linear(width, width)
        self.fc3 = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits."""
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


@register_workload
class MNIST1DMLP(ClassificationWorkload):
    """MLP classifier on locally generated MNIST-1D; target on validation accuracy.

    Metrics: ``train_loss``/``train_accuracy`` on the training set, ``val_loss``/``val_accuracy`` on the
    held-out 20%.
    """

    name = "mnist1d_mlp"
    description = "ReLU MLP 40-128-128-10 on MNIST-1D (5000 samples at quick, generated locally by mnist1d)"

    def __init__(self, size: Size = "quick") -> None:
        super().__init__(size)
        self._cfg = _CONFIGS[size]

    def _raw_data(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        data = mnist1d_arrays(self._cfg.samples)
        return (
            torch.from_numpy(data["x"]),
            torch.from_numpy(data["y"]),
            torch.from_numpy(data["x_test"]),
            torch.from_numpy(data["y_test"]),
        )

    @property
    def target(self) -> Target:
        """Validation accuracy at least the size's threshold."""
        set_by = QUICK_SET_BY if self.size == "quick" else _OTHER_SET_BY
        return Target("val_accuracy", self._cfg.target, higher_is_better=True, set_by=set_by)

    @property
    def budget(self) -> Budget:
        """The size's step budget."""
        return self._cfg.budget

    def init_model(self, seed: int) -> nn.Module:
        """The MLP with PyTorch's default initialisation under ``torch.manual_seed``-free seeding."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return MLP(self.x_train.shape[1], self._cfg.width, 10)

