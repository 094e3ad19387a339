"""Benchmark scripts: they print measured ratios and are never run as tests."""
