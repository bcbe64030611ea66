"""Time: the only module that reads or waits on it.

`LiveClock` is the wall clock. `SimClock` is a simulated one whose time moves only when a test or
the replay driver advances it, so a simulated day of 5-minute cycles runs in well under a second.
Both have one API; components take a `Clock` and never call `time.time()` or `asyncio.sleep()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Protocol

# Waits longer than this are cut into slices and re-checked against the wall clock, so a sleep
# across a machine suspend (CLOCK_MONOTONIC stops) still wakes near the intended wall time.
_LIVE_SLICE_S = 1.0


class Clock(Protocol):
    def time(self) -> float:
        """Return seconds since the Unix epoch (UTC)."""
        ...

    def now(self) -> datetime:
        """Return the current time as an aware UTC datetime."""
        ...

    def monotonic(self) -> float:
        """Return a reading that never goes back, in this clock's seconds (for deadlines)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait for `seconds` of this clock's time."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Wait until this clock reads at least `when` (epoch seconds)."""
        ...

    def busy(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Mark work in progress: a simulated clock does not move time while any is running."""
        ...

    def hold(self) -> Callable[[], None]:
        """Hold a simulated clock from this call until the returned release is called (the first
        call counts, later ones do nothing): `busy` for synchronous code, released anywhere."""
        ...


def to_datetime(ts: float) -> datetime:
    """Convert epoch seconds to an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)


class LiveClock:
    """The wall clock."""

    # time.time itself, not a method calling it: the feed reads it once per message
    time = staticmethod(time.time)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """Return a monotonic reading for measuring durations."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, when: float) -> None:
        while (left := when - time.time()) > 0:
            await asyncio.sleep(min(left, _LIVE_SLICE_S))

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[None]:
        yield

    def hold(self) -> Callable[[], None]:
        return _no_release


def _no_release() -> None:
    pass


class SimClock:
    """A simulated clock: time moves only through `advance`, `advance_to` or `set_time`.

    Advancing releases sleepers in time order and lets the loop run (including any work marked
    `busy`) before moving on to the next sleeper, so timers fire exactly as they would live.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._released = 0  # work inside `released()` (waiting on simulated time while held)
        self._released_hold = False

    def time(self) -> float:
        return self._now

    def now(self) -> datetime:
        return to_datetime(self._now)

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + max(0.0, seconds))

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), fut))
        await fut

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[None]:
        release = self.hold()
        try:
            yield
        finally:
            release()

    def hold(self) -> Callable[[], None]:
        """Hold time now, in this loop turn, until the returned function is called.

        What will register a timer or run timed work one or more loop turns later (a job a fire
        has just started, a scheduler about to arm) holds the clock synchronously, so no amount
        of other work in between lets time pass what it is about to do.
        """
        self._busy += 1
        self._idle.clear()
        held = [True]

        def release() -> None:
            if held[0]:
                held[0] = False
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()

        return release

    @contextlib.asynccontextmanager
    async def released(self) -> AsyncIterator[None]:
        """Let time move while held work waits on it (a replayed LLM answer's latency).

        A replay holds the clock while a cycle runs (`busy`); inside `released()` that hold is
        lent back so the replay keeps moving time (and frames) until the wait is over. Concurrent
        waiters (traders asked together) release one hold; the last one out takes it back.
        """
        self._released += 1
        if self._released == 1 and self._busy > 0:
            self._released_hold = True
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()
        try:
            yield
        finally:
            self._released -= 1
            if self._released == 0 and self._released_hold:
                self._released_hold = False
                self._busy += 1
                self._idle.clear()

    @property
    def held(self) -> bool:
        """Tell whether any work holds time (`busy`, `hold`) right now."""
        return self._busy > 0

    @property
    def released_waiters(self) -> int:
        """Return how many waits inside `released()` are pending."""
        return self._released

    def next_wakeup(self) -> float | None:
        """Return the earliest pending sleeper's wake time, if any."""
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    async def settle(self, rounds: int = 20) -> None:
        """Let ready tasks run, and wait for busy work, until nothing more happens at this time."""
        for _ in range(rounds):
            await asyncio.sleep(0)
        while self._busy:
            await self._idle.wait()
            for _ in range(rounds):
                await asyncio.sleep(0)

    def jump_to(self, when: float) -> bool:
        """Move time to `when` in this loop turn when no sleeper is due by then and nothing
        holds time; else return False, time unchanged (`advance_to` it: the replay's per-frame
        fast path, which has no loop turn to spare)."""
        sleepers = self._sleepers
        if self._busy or (sleepers and sleepers[0][0] <= when):
            return False
        if when > self._now:
            self._now = when
        return True

    async def advance_to(self, when: float) -> None:
        """Move time forward to `when`, waking every sleeper due on the way, in order."""
        await asyncio.sleep(0)  # let just-started tasks register their sleeps first
        self._drop_cancelled()
        if (not self._sleepers or self._sleepers[0][0] > when) and not self._busy:
            self._now = max(self._now, when)  # nothing due: the replay's per-frame fast path
            return
        await self.settle()
        while True:
            self._drop_cancelled()
            if not self._sleepers or self._sleepers[0][0] > when:
                break
            due, _, _ = self._sleepers[0]
            self._now = max(self._now, due)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
            await self.settle()
        self._now = max(self._now, when)

    async def advance(self, seconds: float) -> None:
        """Let ready work run, then move time forward by `seconds`."""
        await self.settle()
        await self.advance_to(self._now + seconds)

    def set_time(self, when: float) -> None:
        """Jump to `when` without waking anyone (sleepers wake on the next advance)."""
        self._now = max(self._now, when)

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
