"""Shared machinery of the supervised classification workloads (MNIST-1D MLP, image CNN)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steepest.bench.workloads._base import Workload, epoch_batches

#: Examples per forward pass during evaluation (bounds evaluation memory).
EVAL_CHUNK = 1000


class ClassificationWorkload(Workload):
    """A classifier trained by cross-entropy on standardised inputs; evaluation reports loss and accuracy.

    Subclasses implement :meth:`_raw_data` (float inputs and integer labels of the training and
    validation sets) and ``init_model``; the data are built on first use (so listing workloads costs
    nothing) and standardised by the training set's mean and standard deviation.
    """

    @abstractmethod
    def _raw_data(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x_train, y_train, x_val, y_val)`` before standardisation (float inputs, int64 labels)."""

    @cached_property
    def _data(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x_train, y_train, x_val, y_val = self._raw_data()
        mean, std = x_train.mean(), x_train.std()
        return (x_train - mean) / std, y_train, (x_val - mean) / std, y_val

    @property
    def x_train(self) -> Tensor:
        """Standardised training inputs."""
        return self._data[0]

    @property
    def y_train(self) -> Tensor:
        """Training labels."""
        return self._data[1]

    @property
    def x_val(self) -> Tensor:
        """Standardised validation inputs."""
        return self._data[2]

    @property
    def y_val(self) -> Tensor:
        """Validation labels."""
        return self._data[3]

    def train_batches(self, seed: int) -> Iterator[tuple[Tensor, ...]]:
        """Shuffled minibatches without replacement, reshuffled every epoch, order from ``seed``."""
        yield from epoch_batches((self.x_train, self.y_train), self.budget.batch_size, seed)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Mean cross-entropy on the batch."""
        x, y = batch
        return F.cross_entropy(model(x), y)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``train_loss``/``train_accuracy`` and ``val_loss``/``val_accuracy`` (in chunks of ``EVAL_CHUNK``)."""
        out: dict[str, float] = {}
        with torch.no_grad():
            for split, x, y in (("train", self.x_train, self.y_train), ("val", self.x_val, self.y_val)):
                total, correct = 0.0, 0
                for start in range(0, y.numel(), EVAL_CHUNK):
                    logits = model(x[start : start + EVAL_CHUNK])
                    target = y[start : start + EVAL_CHUNK]
                    total += float(F.cross_entropy(logits, target, reduction="sum"))
                    correct += int((logits.argmax(dim=1) == target).sum())
                out[f"{split}_loss"] = total / y.numel()
                out[f"{split}_accuracy"] = correct / y.numel()
        return out
