"""Helpers for benchmark scripts on a shared, noisy machine: wait for idle, time, bandwidth."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields), idle


def busy_fraction(interval: float = 0.25) -> float:
    """Fraction of all cores busy over ``interval`` seconds, from /proc/stat (1.0 = all busy)."""
    total0, idle0 = _cpu_times()
    time.sleep(interval)
    total1, idle1 = _cpu_times()
    total = max(total1 - total0, 1)
    return 1.0 - (idle1 - idle0) / total


def wait_for_idle(threshold: float = 0.15, timeout: float = 120.0) -> float:
    """Block until other work uses under ``threshold`` of the machine; return the last reading.

    Returns after ``timeout`` seconds regardless (the caller prints the reading, so a busy
    machine shows up in the report instead of being hidden).
    """
    deadline = time.monotonic() + timeout
    busy = busy_fraction()
    while busy > threshold and time.monotonic() < deadline:
        time.sleep(0.5)
        busy = busy_fraction()
    return busy


@dataclass(frozen=True)
class Timing:
    """Median, min and max of repeated measurements, in seconds."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, samples: list[float]) -> Timing:
        """Summarise ``samples``."""
        return cls(statistics.median(samples), min(samples), max(samples))

    def ms(self) -> str:
        """``median [min, max]`` in milliseconds."""
        return f"{self.median * 1e3:8.2f} [{self.low * 1e3:.2f}, {self.high * 1e3:.2f}]"

    def ratio(self) -> str:
        """``median [min, max]`` of a dimensionless ratio, two decimals."""
        return f"{self.median:.2f} [{self.low:.2f}, {self.high:.2f}]"


def synchronize(device: torch.device | str = "cpu") -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU, where calls return when done)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Seconds one call of ``fn`` takes, including the device work it queued (synchronized before and after)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 2, device: torch.device | str = "cpu") -> Timing:
    """Time ``fn`` ``repeats`` times after ``warmup`` calls (device work included, see :func:`timed`)."""
    for _ in range(warmup):
        fn()
    return Timing.of([timed(fn, device) for _ in range(repeats)])


def copy_bandwidth(
    numel: int = 25_000_000, repeats: int = 9, device: torch.device | str = "cpu"
) -> tuple[float, Timing]:
    """Measured memory bandwidth of ``dst.copy_(src)`` in bytes/s (read + write counted)."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    timing = time_calls(lambda: dst.copy_(src), repeats, device=device)
    return 2 * src.numel() * src.element_size() / timing.median, timing


def inplace_bandwidth(
    numel: int = 25_000_000, repeats: int = 9, device: torch.device | str = "cpu"
) -> tuple[float, Timing]:
    """Measured memory bandwidth of ``a.add_(b)`` in bytes/s (two reads and one write counted).

    The access pattern of an optimizer update: state is read and written in place, so written
    cache lines were just read and no extra read-for-ownership is paid, unlike ``copy_`` into a
    separate buffer (which measures about 2/3 of this on the 2-core machine).
    """
    a = torch.randn(numel, device=device)
    b = torch.randn(numel, device=device)
    timing = time_calls(lambda: a.add_(b), repeats, device=device)
    return 3 * a.numel() * a.element_size() / timing.median, timing


class InplaceBandwidthProbe:
    """One ``a.add_(b)`` over fixed buffers per :meth:`sample`: the in-place bandwidth right now.

    For timing loops that alternate a measured step with a bandwidth sample, so each step is
    compared with the bandwidth the machine delivered within milliseconds of it (on the shared
    2-core machine the in-place bandwidth drifts between about 40 and 85 GB/s over minutes, more
    than the effects being measured).
    """

    def __init__(self, numel: int = 25_000_000, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.a = torch.randn(numel, device=self.device)
        self.b = torch.randn(numel, device=self.device)
        self.bytes = 3 * numel * self.a.element_size()
        for _ in range(2):  # fault the pages in
            self.a.add_(self.b)

    def sample(self) -> float:
        """Bytes per second of one in-place add (two reads and one write counted)."""
        return self.bytes / timed(lambda: self.a.add_(self.b), self.device)
