"""The C allocator's and the garbage collector's settings for a long-running engine.

glibc raises its mmap threshold each time a large block is freed (up to 32 MB), so the next large
numpy temporaries — the leaderboard's bootstrap matrices grow by a row of resamples every cycle —
are carved from the heap instead of mapped, and the heap grows and fragments: a 24 h soak's
resident memory crept ~0.5 MB an hour (5.4 % from hour 1 to the end). Pinning the threshold at
glibc's own default (128 KiB), which also turns off that adjustment, keeps large blocks mapped
and returned on free. It does not make growth vanish: the soak measured when this was added went
from 5.4 % to -2.1 % (median of its runs), and a later full run's three soaks grew 6.37, 1.59 and
0.40 % from hour 1 to the end, so `bench/soak.py` now reports the worst run
(docs/benchmarks.md).

The cyclic garbage collector's full collections walk every tracked object, so they grow with the
heap (modules, settings, SDK clients, candles): in the writer benchmark's process, before this,
they took 28-97 ms each, a stall of the loop and of the writer flush in flight. Once the engine is
ready (a replay: before its first frame), `freeze_startup_heap` collects once and moves what is
alive into the permanent generation (`gc.freeze`), so later collections walk only what the run
itself allocates. Start-up objects freed later are still freed by reference counting; only a
reference cycle among them would stay until the engine stops: `thaw_heap` then returns them to the
collector (a process, a test or a benchmark that runs several engines collects each one's).

With the start-up heap frozen, the collector's full collections come rarely: in an 8-hour soak
Python ran none after start-up, while 900-1,100 objects in reference cycles became garbage each
simulated hour; left to pile up, they were part of a creep of 0.36 MB an hour in a 24-hour soak's
resident memory. `GarbageCollector` runs a full collection every `engine.gc_interval_seconds` of
the engine clock (an hour by default; 1.4-2.9 ms each in that 8-hour soak).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import platform
import time

import structlog

from engine.clock import Clock

log = structlog.get_logger("app")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 128 * 1024  # glibc's default before any adjustment


def pin_malloc_threshold() -> bool:
    """Fix glibc's mmap threshold at its default; return whether it was set (glibc only)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # no such library or symbol: leave the allocator alone
        return False
    log.debug("engine.malloc_pinned", mmap_threshold=MMAP_THRESHOLD, ok=done)
    return done


def freeze_startup_heap() -> int:
    """Collect once, then exempt every object alive now from later collections; return how many
    objects were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("engine.heap_frozen", objects=frozen)
    return frozen


def thaw_heap() -> None:
    """Return every frozen object to the collector (the engine stopped)."""
    gc.unfreeze()


class GarbageCollector:
    """Runs a full garbage collection every `interval` seconds of the engine clock."""

    def __init__(self, clock: Clock, interval: float) -> None:
        if interval <= 0:
            raise ValueError("the collection interval must be positive")
        self.clock, self.interval = clock, interval
        self.runs = 0
        self.collected = 0  # unreachable objects found, in all
        self.last_ms: float | None = None

    async def run(self) -> None:
        """Collect on the timer until cancelled."""
        due = self.clock.time() + self.interval
        while True:
            await self.clock.sleep_until(due)
            self.collect()
            due += self.interval
            now = self.clock.time()
            if due <= now:  # fell behind (suspend): skip the missed collections
                due = now + self.interval

    def collect(self) -> int:
        """Collect every generation now; return how many unreachable objects were found."""
        started = time.perf_counter()
        found = gc.collect()
        self.last_ms = (time.perf_counter() - started) * 1000
        self.runs += 1
        self.collected += found
        log.debug("engine.gc_collected", objects=found, ms=round(self.last_ms, 2))
        return found
