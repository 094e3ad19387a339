"""A small, fast demo: one optimizer against AdamW on a tiny MLP.

:func:`run_demo` trains a 64-64-10 ReLU MLP on scikit-learn's bundled digits data set
(8x8 images of handwritten digits, 1797 samples, read from a file shipped inside
scikit-learn: nothing is downloaded) twice, with the same initial weights and the same
batch order: once with the chosen optimizer and once with AdamW, each with its registry
``suggested`` hyperparameters. It runs on CPU in a few seconds.

Example:
    >>> from steepest.demo import run_demo
    >>> result = run_demo("lion", epochs=1, quiet=True)
    >>> result.optimizer.key, result.baseline.key
    ('lion', 'adamw')
    >>> result.optimizer.test_accuracy > 0.1
    True
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from steepest._extras import require
from steepest.optim import create_optimizer, optimizer_info, optimizer_params, state_bytes

#: The optimizer every demo run is compared with.
BASELINE = "adamw"
#: Fraction of the digits held out for the test set (fixed split, independent of the seed).
TEST_FRACTION = 0.25
#: Seed of the train/test split: the split never changes with ``seed``.
SPLIT_SEED = 0
#: Default number of epochs: about a second of training per optimizer on two CPU cores.
DEFAULT_EPOCHS = 30


@dataclass(frozen=True)
class RunResult:
    """The outcome of training the demo model with one optimizer.

    Attributes:
        key: registry key of the optimizer.
        hyperparameters: the hyperparameters it was built with.
        train_loss: mean cross-entropy over the whole training set after training.
        test_loss: mean cross-entropy over the test set after training.
        test_accuracy: fraction of test images classified correctly, in [0, 1].
        wall_time_s: seconds spent in the training loop (evaluation excluded).
        state_bytes: bytes of optimizer state at the end (:func:`steepest.state_bytes`).
        steps: optimizer steps taken.
    """

    key: str
    hyperparameters: Mapping[str, Any]
    train_loss: float
    test_loss: float
    test_accuracy: float
    wall_time_s: float
    state_bytes: int
    steps: int


@dataclass(frozen=True)
class DemoResult:
    """Both runs of a demo, and the set-up they shared.

    Attributes:
        optimizer: the run with the chosen optimizer.
        baseline: the run with AdamW.
        epochs: passes over the training set.
        seed: seed of the initial weights and of the batch order.
        batch_size: examples per step.
        train_size: training examples.
        test_size: test examples.
    """

    optimizer: RunResult
    baseline: RunResult
    epochs: int
    seed: int
    batch_size: int
    train_size: int
    test_size: int
    model: str = field(default="MLP 64-64-10 (ReLU)")

    @property
    def runs(self) -> tuple[RunResult, RunResult]:
        """Return the chosen optimizer's run, then the baseline's."""
        return (self.optimizer, self.baseline)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as plain JSON-serializable data."""
        data = asdict(self)
        for run in ("optimizer", "baseline"):
            data[run]["hyperparameters"] = {
                k: list(v) if isinstance(v, tuple) else v for k, v in data[run]["hyperparameters"].items()
            }
        return data


@dataclass(frozen=True)
class _Data:
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load_data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Load the digits data set with the demo's fixed train/test split.

    Features are standardized with the training set's mean and standard deviation.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: float32 features of shape ``(n, 64)`` and
        int64 labels in ``0..9``.
    """
    import numpy as np

    # imported here: the library and the CLI's other commands do not need scikit-learn
    load_digits = require("sklearn.datasets", "steepest demo").load_digits

    features, labels = load_digits(return_X_y=True)
    order = np.random.RandomState(SPLIT_SEED).permutation(len(labels))
    n_test = round(TEST_FRACTION * len(labels))
    test_idx, train_idx = order[:n_test], order[n_test:]
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.int64)
    x_train, x_test = x[train_idx], x[test_idx]
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-3)
    return (x_train - mean) / std, y[train_idx], (x_test - mean) / std, y[test_idx]


def make_model(seed: int, hidden: int = 64) -> nn.Module:
    """Build the demo MLP (64 inputs, ``hidden`` ReLU units, 10 outputs) with seeded weights.

    The global torch RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _evaluate(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(1) == y).float().mean().item()
    model.train()
    return loss, accuracy


def _make_closure(
    model: nn.Module, optimizer: Optimizer, xb: Tensor, yb: Tensor, create_graph: bool
) -> Callable[[], Tensor]:
    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(xb), yb)
        # A zeroth-order method evaluates its closure under no_grad: forward only.
        if loss.requires_grad:
            with warnings.catch_warnings():
                # torch warns of a param <-> grad reference cycle; zero_grad(set_to_none=True)
                # before every backward and after training breaks it.
                warnings.filterwarnings("ignore", "Using backward\\(\\) with create_graph=True", UserWarning)
                loss.backward(create_graph=create_graph)
        return loss

    return closure


def _train(
    key: str,
    hyperparameters: Mapping[str, Any],
    model: nn.Module,
    data: _Data,
    *,
    epochs: int,
    seed: int,
    batch_size: int,
    progress: bool,
) -> RunResult:
    tqdm = require("tqdm", "steepest demo").tqdm
    entry = optimizer_info(key)
    params, extra = optimizer_params(key, model)
    optimizer = create_optimizer(key, params, **{**extra, **hyperparameters})
    needs_closure = entry.capabilities.requires_closure
    create_graph = entry.capabilities.needs_create_graph
    generator = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    steps_per_epoch = math.ceil(n / batch_size)
    steps = 0
    bar = tqdm(total=epochs * steps_per_epoch, desc=f"{key:>8}", unit="step", disable=not progress, leave=True)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for first in range(0, n, batch_size):
            index = order[first : first + batch_size]
            closure = _make_closure(model, optimizer, data.x_train[index], data.y_train[index], create_graph)
            loss: Tensor | float | None
            if needs_closure:
                # torch types the closure as returning float; a loss tensor is what it gets in practice.
                loss = optimizer.step(cast("Callable[[], float]", closure))
            else:
                loss = closure()
                optimizer.step()
            steps += 1
            bar.update(1)
        if progress and loss is not None:
            value = loss.item() if isinstance(loss, Tensor) else float(loss)
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
    wall_time = time.perf_counter() - start
    bar.close()
    optimizer.zero_grad(set_to_none=True)
    train_loss, _ = _evaluate(model, data.x_train, data.y_train)
    test_loss, test_accuracy = _evaluate(model, data.x_test, data.y_test)
    return RunResult(
        key=key,
        hyperparameters=dict(hyperparameters),
        train_loss=train_loss,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        wall_time_s=wall_time,
        state_bytes=state_bytes(optimizer),
        steps=steps,
    )


def resolve_hyperparameters(optimizer: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the hyperparameters the demo uses for ``optimizer``, checked.

    They are the registry's ``suggested`` ones updated with ``overrides``. The optimizer is
    built once on the demo model, so a bad name or value raises here, before any training.

    Raises:
        KeyError: ``optimizer`` is not registered.
        TypeError: a hyperparameter the optimizer does not take.
        ValueError: an out-of-range hyperparameter value.
    """
    hyperparameters = {**optimizer_info(optimizer).suggested, **(overrides or {})}
    model = make_model(0)
    params, extra = optimizer_params(optimizer, model)
    create_optimizer(optimizer, params, **{**extra, **hyperparameters})
    return hyperparameters


def run_demo(
    optimizer: str = "lion",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    quiet: bool = False,
    on_run_start: Callable[[str, Mapping[str, Any]], None] | None = None,
) -> DemoResult:
    """Train the demo MLP with ``optimizer``, then with AdamW, and compare.

    Both runs start from the same initial weights (from ``seed``) and see the same batches
    in the same order. Torch's thread settings are left alone.

    Args:
        optimizer: registry key of the optimizer to try (see ``steepest list``).
        epochs: passes over the 1348 training images.
        seed: seed of the initial weights and of the batch order.
        hyperparameters: overrides of the optimizer's registry ``suggested``
            hyperparameters (AdamW always uses its own suggested ones).
        batch_size: examples per step.
        quiet: no progress bar. Without a terminal on stderr there is none either way.
        on_run_start: called with the key and hyperparameters before each run.

    Returns:
        The two runs' results.

    Raises:
        KeyError: ``optimizer`` is not registered.
        TypeError: a hyperparameter the optimizer does not take.
        ValueError: a bad value (negative ``epochs``, an out-of-range hyperparameter).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    chosen = resolve_hyperparameters(optimizer, hyperparameters)
    baseline = resolve_hyperparameters(BASELINE)
    data = _Data(*load_data())
    initial = make_model(seed)
    progress = not quiet and sys.stderr.isatty()
    results = []
    for key, hp in ((optimizer, chosen), (BASELINE, baseline)):
        if on_run_start is not None:
            on_run_start(key, hp)
        results.append(
            _train(
                key,
                hp,
                copy.deepcopy(initial),
                data,
                epochs=epochs,
                seed=seed,
                batch_size=batch_size,
                progress=progress,
            )
        )
    return DemoResult(
        optimizer=results[0],
        baseline=results[1],
        epochs=epochs,
        seed=seed,
        batch_size=batch_size,
        train_size=len(data.y_train),
        test_size=len(data.y_test),
    )
