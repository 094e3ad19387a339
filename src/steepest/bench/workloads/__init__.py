"""Benchmark workloads: each a model, data from code or an installed package, a loss, a metric and a target.

Every public module of this package (a name not starting with ``_``) registers its workloads with
:func:`register_workload`; the modules are imported on the first registry query (:func:`get_workload`,
:func:`workload_names`), so importing this package stays cheap. Adding a workload is adding a module.
"""

from steepest.bench.workloads._base import (
    SIZES,
    WORKLOADS,
    Budget,
    Size,
    Target,
    Workload,
    WorkloadInfo,
    get_workload,
    register_workload,
    seeded_generator,
    workload_names,
)

__all__ = [
    "SIZES",
    "WORKLOADS",
    "Budget",
    "Size",
    "Target",
    "Workload",
    "WorkloadInfo",
    "get_workload",
    "register_workload",
    "seeded_generator",
    "workload_names",
]
