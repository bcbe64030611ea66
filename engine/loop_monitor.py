"""The loop-lag monitor: how late the event loop runs a timer, measured on the wall clock.

Anything that blocks the loop (a slow import, building an SSL context, parsing a big answer)
delays ticks, stop-losses and liquidations by as much. The monitor asks the loop to wake it every
`interval` seconds and records how late the wake-up came: every sample goes into the
`arena_loop_lag_seconds` histogram, and a lag over `warn_after` seconds is logged as
`loop.lagged`. It waits on the loop's own timer (`call_later`), not on the engine clock, and
measures with `time.perf_counter`: lag is wall time even in a replay on simulated time, and finer
than uvloop's `loop.time()`, which moves in whole milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog

from engine import metrics
from engine.settings import EngineSettings

log = structlog.get_logger("loop")


@dataclass(slots=True)
class LagStats:
    """What the monitor has seen so far."""

    samples: int = 0
    lagged: int = 0  # samples over the warning threshold
    max_lag: float = 0.0
    last_lag: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"samples": self.samples, "lagged": self.lagged,
                "max_lag_s": round(self.max_lag, 6), "last_lag_s": round(self.last_lag, 6)}


class LoopMonitor:
    """Samples the event loop's lag every `interval` seconds until cancelled."""

    def __init__(self, settings: EngineSettings | None = None, *, interval: float | None = None,
                 warn_after: float | None = None) -> None:
        s = settings or EngineSettings()
        self.interval = interval if interval is not None else s.loop_lag_interval_seconds
        self.warn_after = warn_after if warn_after is not None else s.loop_lag_warn_seconds
        self.stats = LagStats()

    def reset(self) -> None:
        """Forget the samples so far (e.g. to measure one stretch of work)."""
        self.stats = LagStats()

    async def run(self) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = time.perf_counter() + self.interval
            wake: asyncio.Future[None] = loop.create_future()
            handle = loop.call_later(self.interval, _wake, wake)
            try:
                await wake
            finally:
                handle.cancel()
            self.observe(max(0.0, time.perf_counter() - due))

    def observe(self, lag: float) -> None:
        """Record one lag sample."""
        s = self.stats
        s.samples += 1
        s.last_lag = lag
        s.max_lag = max(s.max_lag, lag)
        metrics.LOOP_LAG.observe(lag)
        if lag > self.warn_after:
            s.lagged += 1
            log.warning("loop.lagged", lag_s=round(lag, 4), threshold_s=self.warn_after)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
