"""Fixtures shared by the optimizer tests."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch
from torch._dynamo.utils import counters

from steepest.optim import _fused


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    """Empty dynamo caches and counters for the test, and a fused fallback warning is an error.

    Recompile limits and ``unique_graphs`` are counted per process, so a test that counts graphs
    or must really compile starts from nothing.
    """
    torch._dynamo.reset()
    counters.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", _fused.FusedFallbackWarning)
        yield
    torch._dynamo.reset()
