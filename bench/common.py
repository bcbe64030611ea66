"""Shared helpers for benchmarks: results, medians after warm-up, the table."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Result:
    """One measured figure and its target."""

    name: str
    value: float
    unit: str
    target: str  # human text, e.g. ">= 100000"
    met: bool | None  # None when there is no target
    detail: str = ""
    # How much the figure measured (rows written, frames delivered, positions open, requests
    # answered): 0 means the benchmark measured nothing, and the runner fails the row.
    workload: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_of(fn: Callable[[], float], runs: int = 5,
              warmup: int = 1) -> tuple[float, list[float]]:
    """Run `fn` (one figure) `warmup` times untimed, then `runs` times; return the median."""
    for _ in range(warmup):
        fn()
    values = [fn() for _ in range(runs)]
    return statistics.median(values), values


def p99(samples: list[float]) -> float:
    """Return the 99th percentile of `samples`."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def timer() -> float:
    """Return a high-resolution timestamp (benchmarks time the wall clock on purpose)."""
    return time.perf_counter()


def at_least(value: float, target: float) -> bool:
    return value >= target


def at_most(value: float, target: float) -> bool:
    return value <= target


def schedstat() -> tuple[float, float]:
    """Return this thread's (seconds on a CPU, seconds runnable but waiting for one), from
    /proc/self/task/<tid>/schedstat (elsewhere: its CPU time and 0)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as fh:
            on_cpu, waiting = fh.read().split()[:2]
    except OSError:  # not Linux: CPU time only
        return time.thread_time(), 0.0
    return int(on_cpu) / 1e9, int(waiting) / 1e9


async def serve_locally(app: Any) -> tuple[Any, int]:
    """Start the aiohttp `app` on 127.0.0.1 at a free port; return its runner (`cleanup()` stops
    it) and the port."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])
