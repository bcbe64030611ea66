"""A replay's progress: frames done of the file's total, simulated time, speed, ETA.

The file is counted once when the replay starts, in a process of its own
(`engine.market.framecount`: market lines only, LLM and cycle lines of a session recording are not
frames). `ReplayProgress.status()` reads the replay's own frame counter and the simulated clock,
so following the progress costs the replay nothing per frame. `watch()` shows it as a rich
progress bar (console mode on a terminal) or logs a `replay.progress` line at every 10 %
otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import structlog

from engine.clock import LiveClock, to_datetime
from engine.market import framecount
from engine.market.framecount import count_frames

log = structlog.get_logger("feed")

REFRESH_SECONDS = 0.2  # wall time between two redraws of the bar
LINES_REFRESH_SECONDS = 0.05  # wall time between two looks for a crossed 10 % mark


async def count_in_process(path: str | Path) -> tuple[int, float | None, float | None]:
    """Return `count_frames(path)` computed by a process of its own (killed when cancelled);
    where no process can be started, by a thread."""
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, framecount.__file__, str(path), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except (OSError, NotImplementedError):
        return await asyncio.to_thread(count_frames, path)
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled: the count is not wanted any more
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    if proc.returncode != 0:
        why = (err.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"counting {path} failed (exit {proc.returncode}): {why}")
    frames, first, last = orjson.loads(out)
    return int(frames), first, last


class ReplayProgress:
    """How far a replay is: read from the replay and its clock whenever asked."""

    def __init__(self, replay: Any, wall: LiveClock | None = None) -> None:
        self.replay = replay  # an engine.market.replay.Replay
        self.wall = wall or LiveClock()
        self.total: int | None = None  # None until the file is counted
        self.sim_start: float | None = None
        self.sim_end: float | None = None
        self.started = self.wall.monotonic()
        self.finished = False
        self._counting: asyncio.Future[None] | None = None  # the count, once started

    def _count_once(self) -> asyncio.Future[None]:
        if self._counting is None:
            self._counting = asyncio.ensure_future(self.count())
        return self._counting

    async def count(self) -> None:
        """Count the file's frames in a process of its own (engine.market.framecount)."""
        self.total, self.sim_start, self.sim_end = await count_in_process(self.replay.path)

    def status(self) -> dict[str, Any]:
        """Return frames done/total, percent, simulated time, speed (x real time) and ETA."""
        done = self.replay.frames
        total = self.total
        elapsed = max(self.wall.monotonic() - self.started, 1e-9)
        now = self.replay.clock.time()
        sim_done = now - self.sim_start if self.sim_start is not None else None
        rate = done / elapsed
        pct = (100.0 if self.finished else min(100.0, done / total * 100)) if total else None
        left = max(total - done, 0) if total is not None else None
        return {
            "frames_done": done,
            "frames_total": total,
            "percent": None if pct is None else round(pct, 1),
            "sim_time": to_datetime(now).isoformat(),
            "sim_elapsed_s": None if sim_done is None else round(sim_done, 1),
            "sim_total_s": (None if self.sim_start is None or self.sim_end is None
                            else round(self.sim_end - self.sim_start, 1)),
            "speed_x": None if sim_done is None else round(sim_done / elapsed, 1),
            "frames_per_s": round(rate, 1),
            "elapsed_s": round(elapsed, 2),
            "eta_s": (0.0 if self.finished else None if left is None or rate <= 0
                      else round(left / rate, 1)),
            "finished": self.finished,
        }

    async def watch(self, *, bar: bool, console: Any = None) -> None:
        """Follow the replay until cancelled: a progress bar, or a log line every 10 %."""
        if self.total is None:  # shielded: a replay that ends first still gets its total
            await asyncio.shield(self._count_once())
        if bar:
            await self._bar(console)
        else:
            await self._lines()

    @contextlib.asynccontextmanager
    async def shown(self, *, bar: bool) -> AsyncIterator[ReplayProgress]:
        """Watch the progress while the body (the replay) runs; the last figures when it ends."""
        watcher = asyncio.create_task(self.watch(bar=bar), name="replay.progress")
        try:
            yield self
            self.finished = True
            if self._counting is not None:  # the last figures have the total (a short file's
                await asyncio.wait({self._counting})  # count can end after its replay)
        finally:
            watcher.cancel()
            await asyncio.wait({watcher})  # its own errors stay in it: a display never stops us
            if not watcher.cancelled() and (exc := watcher.exception()) is not None:
                log.warning("replay.progress_failed", error=f"{type(exc).__name__}: {exc}")

    async def _lines(self) -> None:
        logged = 0  # deciles logged so far
        try:
            while True:
                decile = self.replay.frames * 10 // self.total if self.total else 0
                if decile > logged:
                    logged = decile
                    log.info("replay.progress", decile=decile * 10, **self.status())
                await self.wall.sleep(LINES_REFRESH_SECONDS)
        finally:
            if self.finished and logged < 10:
                log.info("replay.progress", decile=100, **self.status())

    async def _bar(self, console: Any = None) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        columns = (TextColumn("replay"), BarColumn(), TaskProgressColumn(),
                   TextColumn("{task.completed:,.0f}/{task.total:,.0f} frames"),
                   TextColumn("sim {task.fields[sim]}"), TextColumn("{task.fields[speed]}x"),
                   TextColumn("ETA {task.fields[eta]}"))
        with Progress(*columns, console=console, transient=False, auto_refresh=False) as bar:
            task = bar.add_task("replay", total=self.total or 1, sim="-", speed="-", eta="-")
            try:
                while True:
                    self._draw(bar, task)
                    await self.wall.sleep(REFRESH_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    self._draw(bar, task)

    def _draw(self, bar: Any, task: Any) -> None:
        s = self.status()
        eta = s["eta_s"]
        bar.update(task, completed=s["frames_done"] if not s["finished"] else self.total,
                   sim=s["sim_time"][:19].replace("T", " "),
                   speed="-" if s["speed_x"] is None else f"{s['speed_x']:,.0f}",
                   eta="-" if eta is None else f"{eta:,.0f}s")
        bar.refresh()
