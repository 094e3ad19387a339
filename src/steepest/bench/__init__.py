"""The benchmark: workloads, runner, result store, tuning, scoring and report (see DESIGN.md)."""
