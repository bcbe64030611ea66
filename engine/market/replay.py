"""Replay a recording through the feed on a simulated clock.

Replay moves the `SimClock` to each frame's receive time before handing the frame to
`Feed.handle_frame`, so timers (the 5-minute cycles) fire at the recorded times. At `speed=None`
it runs as fast as the engine keeps up; at `speed=X` it waits in real time, X times faster than
recorded. The file format is described in `engine.market.recording`; a batch line moves the
clock once and hands its items over in order, its `path` items only when `path_wanted` says
so. LLM and cycle lines only move the clock (the LLM session reads them on its own). When the
file ends while a trader still waits for a recorded answer's latency on the simulated clock,
time moves on to those answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from engine.clock import LiveClock, SimClock
from engine.halt import TradingGate
from engine.market.feed import Feed
from engine.market.recording import iter_records

log = structlog.get_logger("feed")

YIELD_EVERY = 16  # frames handled between two yields to the loop at max speed


class Replay:
    """Feeds a recorded file through `feed.handle_frame`, driving the simulated clock."""

    def __init__(self, path: str | Path, feed: Feed, clock: SimClock, *,
                 speed: float | None = None,
                 path_wanted: Callable[[str], bool] | None = None,
                 gate: TradingGate | None = None, start_after: float | None = None) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive, or None for max speed")
        self.path = str(path)
        self.feed = feed
        self.clock = clock
        self.speed = speed
        # A batch's `path` frames (a backtest's book inside a minute) go to the feed only when
        # this says so for their symbol (the engine: a stop or take could trigger); None: always.
        self.path_wanted = path_wanted
        # A resumed arena: frames up to this instant happened in an earlier run; only the
        # candle history (backfill lines) is taken from them, without moving the clock.
        self.start_after = start_after
        self.skipped = 0
        # While trading is halted (engine.halt) no frame is consumed: simulated time stands still,
        # so a replay's results never depend on a database hiccup.
        self.gate = gate
        self.frames = 0
        self.paths_skipped = 0
        self.paused_s = 0.0  # wall time spent halted
        self._wall = LiveClock()

    async def run(self) -> None:
        """Replay every frame of the file in order, then return."""
        feed, clock, bus, gate = self.feed, self.clock, self.feed.bus, self.gate
        feed.start_replay(self.path)
        wall_start = self._wall.monotonic()
        first: float | None = None
        woken = bus.wakeups
        try:
            skip_until = self.start_after
            for t, kind, item in iter_records(self.path):
                if skip_until is not None:
                    if t <= skip_until:
                        if kind == "backfill":
                            feed.replay_backfill(item, clock.time())
                        else:
                            self.skipped += 1
                        continue
                    skip_until = None
                if gate is not None and gate.storage_halted:
                    await self._paused(gate)
                if first is None:
                    first = t
                if self.speed is not None:
                    await self._wall.sleep(wall_start + (t - first) / self.speed
                                           - self._wall.monotonic())
                if bus.wakeups != woken:  # the last record woke a subscriber: it runs at its time
                    await asyncio.sleep(0)
                    woken = bus.wakeups
                if not clock.jump_to(t):  # a timer due on the way, or work holding time
                    await clock.advance_to(t)
                if kind == "raw":
                    feed.handle_frame(item, t)
                elif kind == "backfill":
                    feed.replay_backfill(item, t)
                elif kind == "batch":
                    self._batch(item, t)
                else:
                    if kind == "halt" and gate is not None:  # trading stood still live here
                        self._recorded_halt(gate, item)
                    continue  # an LLM, cycle, pace or halt line: its time only
                bus.flush()  # the bus handlers (the broker's trigger watch) at this record's time
                self.frames += 1
                if self.frames % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let the rest of the loop (wall-time work) run
            await clock.settle()
            # Answers whose latency ends past the last line: let simulated time reach them.
            while clock.released_waiters and (due := clock.next_wakeup()) is not None:
                await clock.advance_to(due)
        finally:
            feed.end_replay(self.frames)
        log.info("feed.replay_finished", path=self.path, frames=self.frames,
                 paths_skipped=self.paths_skipped, skipped_before_resume=self.skipped,
                 wall_s=round(self._wall.monotonic() - wall_start, 3))

    async def _paused(self, gate: TradingGate) -> None:
        """Wait, consuming no frame, until trading resumes; a paced replay keeps its pace after."""
        started = self._wall.monotonic()
        log.warning("feed.replay_paused", reason=gate.reason, at=self.clock.time())
        await gate.wait_storage()
        paused = self._wall.monotonic() - started
        self.paused_s += paused
        log.info("feed.replay_resumed", paused_s=round(paused, 3), at=self.clock.time())

    def _recorded_halt(self, gate: TradingGate, item: dict[str, Any]) -> None:
        """Halt or resume trading where the recorded run did (`halt` lines of --record)."""
        if item.get("halted"):
            gate.halt(f"recorded ({item.get('reason') or 'halted'})", source="recorded")
        else:
            gate.resume(source="recorded")

    def _batch(self, items: list[Any], t: float) -> None:
        """Hand a batch line's items to the feed in order (one clock move for all of them)."""
        handle, wanted = self.feed.handle_frame, self.path_wanted
        for item in items:
            if type(item) is str:
                handle(item, t)
            elif "path" in item:
                if wanted is None or wanted(item["path"]):
                    for frame in item["frames"]:
                        handle(frame, t)
                else:
                    self.paths_skipped += 1
            else:
                self.feed.replay_backfill(item, t)
