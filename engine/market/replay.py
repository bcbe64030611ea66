"""Replay a recording through the feed on a simulated clock.

Replay moves the `SimClock` to each frame's receive time before handing the frame to
`Feed.handle_frame`, so timers (the 5-minute cycles) fire at the recorded times. At `speed=None`
it runs as fast as the engine keeps up; at `speed=X` it waits in real time, X times faster than
recorded. The file format is described in `engine.market.recording`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from engine.clock import LiveClock, SimClock
from engine.market.feed import Feed
from engine.market.recording import read_frames

log = structlog.get_logger("feed")

YIELD_EVERY = 16  # frames handled between two yields to the loop at max speed


class Replay:
    """Feeds a recorded file through `feed.handle_frame`, driving the simulated clock."""

    def __init__(self, path: str | Path, feed: Feed, clock: SimClock, *,
                 speed: float | None = None) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive, or None for max speed")
        self.path = str(path)
        self.feed = feed
        self.clock = clock
        self.speed = speed
        self.frames = 0
        self._wall = LiveClock()

    async def run(self) -> None:
        """Replay every frame of the file in order, then return."""
        feed, clock = self.feed, self.clock
        feed.start_replay(self.path)
        wall_start = self._wall.monotonic()
        first: float | None = None
        try:
            for t, raw in read_frames(self.path):
                if first is None:
                    first = t
                if self.speed is not None:
                    await self._wall.sleep(wall_start + (t - first) / self.speed
                                           - self._wall.monotonic())
                await clock.advance_to(t)
                if type(raw) is str:
                    feed.handle_frame(raw, t)
                else:
                    feed.replay_backfill(raw, t)
                self.frames += 1
                if self.frames % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let subscribers keep up
            await clock.settle()
        finally:
            feed.end_replay(self.frames)
        log.info("feed.replay_finished", path=self.path, frames=self.frames,
                 wall_s=round(self._wall.monotonic() - wall_start, 3))
