"""Benchmark workloads: each a model, data from code or an installed package, a loss, a metric and a target."""

from steepest.bench.workloads._base import SIZES, Budget, Size, Target, Workload, WorkloadInfo, seeded_generator

__all__ = ["SIZES", "Budget", "Size", "Target", "Workload", "WorkloadInfo", "seeded_generator"]
