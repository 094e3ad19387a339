"""Adaptive batch sizes by the norm test (AdAdaGrad / AdAdaGrad-Norm), for any optimizer and a ``DataLoader``."""

from steepest.batching.norm_test import (
    AdaptiveBatchSampler,
    AdaptiveBatchSize,
    BatchTestResult,
    gradient_statistics,
    per_example_gradients,
)

__all__ = [
    "AdaptiveBatchSampler",
    "AdaptiveBatchSize",
    "BatchTestResult",
    "gradient_statistics",
    "per_example_gradients",
]
