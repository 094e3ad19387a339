"""The memory-efficient optimizers train the tiny char-level GPT about as well as AdamW at tuned learning rates.

Margins are stated per size and were set from measured runs (figures in the issue-3 closing note): the
default selection runs the ``tiny`` size for 40 steps; the slow check runs the ``quick`` size for 300
steps, the comparison the note reports.
"""

from __future__ import annotations

import pytest
import torch

from steepest.bench.workloads import get_workload
from steepest.repro.memory_efficient_quality import compare

# Relative gap of the best final validation loss to AdamW's best, over each optimizer's 4-point lr grid.
TINY_MARGIN = 0.10
QUICK_MARGIN = 0.15


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_char_lm_within_margin_of_adamw() -> None:
    workload = get_workload("char_lm", "tiny")
    results = {r.optimizer: r for r in compare(workload, steps=40)}
    initial = float(workload.evaluate(workload.init_model(0))["val_loss"])
    assert results["adamw"].val_loss < 0.7 * initial
    for key in ("adam_mini", "galore_adamw", "fira", "frugal", "scale"):
        assert results[key].gap <= TINY_MARGIN, f"{key}: {results[key]}"
    # BlockLLM updates half the tensors at a time: in 40 steps it must learn, not match AdamW.
    assert results["blockllm"].val_loss < 0.97 * initial


@pytest.mark.slow
def test_quick_char_lm_within_margin_of_adamw() -> None:
    results = compare(get_workload("char_lm", "quick"), steps=300)
    for r in results:
        assert r.gap <= QUICK_MARGIN, r
