"""Heavy-tailed (Zipf) class imbalance: full-batch softmax (linear) regression with per-frequency-group losses.

Setup of Kunstner, Yadav, Milligan, Schmidt, Bietti, "Heavy-Tailed Class Imbalance and Why Adam Outperforms
Gradient Descent on Language Models", NeurIPS 2024, arXiv:2402.19449 (their linear model on synthetic data):
``C`` classes whose frequencies follow Zipf's law, class ``k`` (1-based) having about ``n_1 / k`` samples
(at least one each), inputs with independent entries uniform on ``[0, 1)`` drawn independently of the labels
(the paper's "balanced X, imbalanced Y" data: the inputs are not centred, and the shared mean direction is what
limits gradient descent's step size), and a linear softmax model ``W x`` trained with the full-batch
cross-entropy. With ``d`` about ``1.1 n`` (as in the paper) the data is separable, so the loss can be driven
towards 0 and the run is a pure optimisation task: ``train_loss`` and ``val_loss`` are both the full objective,
as in the paper's synthetic experiment (there is nothing to generalise). The paper's finding: gradient descent
makes slow progress on the many rare classes, while Adam and sign descent lower the loss of all classes (see
:mod:`steepest.repro.heavy_tailed`, which also shows how that depends on the step budget at small scale).

Per-group losses: classes are sorted by frequency (most frequent first) and cut into :data:`N_GROUPS`
consecutive groups holding about the same number of samples each (the paper's plots); group 0 is the most
frequent class or classes, the last group the long tail of classes seen once or twice. :meth:`ZipfSoftmax.evaluate`
reports the mean loss of each group as ``loss_group_0`` ... ``loss_group_9``.

Differences from the paper: class counts ``round(n pi_k)`` with ``pi_k`` proportional to ``1/k`` instead of
the paper's power-of-two steps (``2^i`` classes with ``2^(m-i)`` samples each); smaller sizes (``C`` = 200
classes at ``quick``); a tiny seeded initialisation ``N(0, 1e-6)`` instead of zero, so the seed matters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steepest.bench.workloads._base import Budget, Size, Target, Workload, register_workload, seeded_generator

#: Number of frequency groups reported by :meth:`ZipfSoftmax.evaluate`.
N_GROUPS = 10
_DATA_SEED = 0
_INIT_STD = 1e-3


@dataclass(frozen=True)
class _ZipfConfig:
    classes: int
    samples: int  # about n; the exact count is the sum of the rounded Zipf counts
    dim: int
    target: float
    budget_steps: int
    eval_every: int
    set_by: str


_CONFIGS: dict[Size, _ZipfConfig] = {
    "tiny": _ZipfConfig(100, 800, 880, 0.5, 100, 10, "fixed for tests"),
    "quick": _ZipfConfig(200, 1500, 1664, 0.1, 400, 10, "see QUICK_SET_BY"),
    "full": _ZipfConfig(500, 4000, 4400, 0.1, 1000, 20, "provisional: not calibrated"),
}

QUICK_SET_BY = (
    "AdamW (wd 0) lr 3e-2 reaches 0.1 at step 220 (12.2 s), lr 3e-3 at 240; gradient descent (SGD, momentum 0) "
    "lr 3.0 at about 300 and lr 1.0 at about 340, both after an unstable phase (loss above 100), lr 0.1/0.3 and "
    "heavy-ball 0.01/0.03 not within 400 steps; seed 0; "
    "steepest 0.1.0, torch 2.13.0+cpu, 1 thread on the shared 2-core machine; benchmarks/calibrate_workloads.py"
)


def zipf_counts(classes: int, samples: int) -> Tensor:
    """Samples per class, class ``k`` (1-based) getting ``max(1, round(samples * (1/k) / H_C))``."""
    weights = 1.0 / torch.arange(1, classes + 1, dtype=torch.float64)
    weights /= weights.sum()
    return torch.clamp(torch.round(weights * samples), min=1).to(torch.int64)


def frequency_groups(counts: Tensor, n_groups: int = N_GROUPS) -> Tensor:
    """Group index per class: classes by decreasing count, cut into ``n_groups`` parts of about equal mass.

    Each group is closed once it holds at least its share of the samples not yet grouped (the share is
    recomputed after every group, so a very frequent class alone does not empty the next group). Every
    group gets at least one class.

    Raises:
        ValueError: fewer classes than groups.
    """
    classes = counts.numel()
    if classes < n_groups:
        raise ValueError(f"need at least {n_groups} classes for {n_groups} groups, got {classes}")
    order = sorted(range(classes), key=lambda k: (-int(counts[k]), k))
    group = torch.empty(classes, dtype=torch.int64)
    remaining = int(counts.sum())
    current, filled = 0, 0
    for position, k in enumerate(order):
        group[k] = current
        filled += int(counts[k])
        groups_left = n_groups - current
        classes_left = classes - position - 1
        if groups_left > 1 and (filled * groups_left >= remaining or classes_left == groups_left - 1):
            remaining -= filled
            current, filled = current + 1, 0
    return group


@register_workload
class ZipfSoftmax(Workload):
    """Full-batch softmax regression on Zipf-distributed classes; loss reported per frequency group.

    Metrics: ``train_loss`` = ``val_loss`` = the full cross-entropy (the target metric), ``train_accuracy``,
    and ``loss_group_i`` for each of the :data:`N_GROUPS` frequency groups (0 = most frequent).
    """

    name = "zipf_softmax"
    description = "heavy-tailed (Zipf, 200 classes at quick) full-batch softmax regression; loss per frequency group"
    extra_metrics = tuple(f"loss_group_{i}" for i in range(N_GROUPS))

    def __init__(self, size: Size = "quick") -> None:
        super().__init__(size)
        cfg = _CONFIGS[size]
        self._cfg = cfg
        gen = seeded_generator(_DATA_SEED)
        self.class_counts = zipf_counts(cfg.classes, cfg.samples)
        labels = torch.repeat_interleave(torch.arange(cfg.classes), self.class_counts)
        self.labels = labels[torch.randperm(labels.numel(), generator=gen)]
        self.inputs = torch.rand(self.labels.numel(), cfg.dim, generator=gen)
        self.class_group = frequency_groups(self.class_counts)
        self.sample_group = self.class_group[self.labels]
        self._group_sizes = torch.bincount(self.sample_group, minlength=N_GROUPS).to(torch.float32)

    @property
    def target(self) -> Target:
        """Full training loss at most the size's threshold."""
        set_by = QUICK_SET_BY if self.size == "quick" else self._cfg.set_by
        return Target("train_loss", self._cfg.target, higher_is_better=False, set_by=set_by)

    @property
    def budget(self) -> Budget:
        """The size's step budget; the batch is the whole data set."""
        return Budget(self._cfg.budget_steps, self._cfg.eval_every, int(self.labels.numel()))

    def init_model(self, seed: int) -> nn.Module:
        """A bias-free ``Linear(d, C)`` with weights ``N(0, 1e-6)`` drawn from ``seed``."""
        gen = seeded_generator(seed)
        with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws from the global RNG
            model = nn.Linear(self._cfg.dim, self._cfg.classes, bias=False)
        with torch.no_grad():
            model.weight.copy_(_INIT_STD * torch.randn(model.weight.shape, generator=gen))
        return model

    def train_batches(self, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Full batch, every step: the same ``(inputs, labels)`` forever (the seed does not matter)."""
        return repeat((self.inputs, self.labels))

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Mean cross-entropy of the linear model on the batch."""
        inputs, labels = batch
        return F.cross_entropy(model(inputs), labels)

    def group_losses(self, model: nn.Module) -> Tensor:
        """Mean loss of each frequency group, shape ``(N_GROUPS,)`` (group 0 = most frequent classes)."""
        with torch.no_grad():
            per_sample = F.cross_entropy(model(self.inputs), self.labels, reduction="none")
            sums = torch.zeros(N_GROUPS).index_add_(0, self.sample_group, per_sample)
        return sums / self._group_sizes

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Full loss, accuracy and the loss of every frequency group."""
        with torch.no_grad():
            logits = model(self.inputs)
            per_sample = F.cross_entropy(logits, self.labels, reduction="none")
            accuracy = float((logits.argmax(dim=1) == self.labels).float().mean())
            sums = torch.zeros(N_GROUPS).index_add_(0, self.sample_group, per_sample)
        loss = float(per_sample.mean())
        groups = {f"loss_group_{i}": float(v) for i, v in enumerate(sums / self._group_sizes)}
        return {"train_loss": loss, "val_loss": loss, "train_accuracy": accuracy, **groups}
