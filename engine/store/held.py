"""The rows not yet in Postgres: on the bus, in memory, in flight and in the spill file.

They belong to the engine (which holds the `Writer`, and so this object), not to the task that
writes them: a writer task that crashes or restarts never takes a row with it. Moving rows out
of memory goes one of two ways, both in order and both durable: to the spill file (an outage)
or, when the engine must stop without having committed or spilled them, to the last-resort file.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import structlog

from engine import metrics
from engine.bus import Bus
from engine.clock import Clock
from engine.settings import DatabaseSettings
from engine.store.backlog import RowQueue
from engine.store.errors import describe
from engine.store.rows import ROW_OF, row_to_json
from engine.store.spill import SpillFile

log = structlog.get_logger("writer")


class HeldRows:
    """Every row waiting for Postgres, and the two ways out of memory when it cannot take them."""

    def __init__(self, bus: Bus, settings: DatabaseSettings, clock: Clock, wall: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._wall = wall
        # Subscribed at construction (policy "block"): nothing published afterwards is missed.
        self.sub = bus.subscribe("writer", ROW_OF.keys(), policy="block",
                                 capacity=max(10_000, 4 * settings.batch_rows))
        self.queue = RowQueue()  # publication order across tables (engine.store.backlog)
        self.spill = SpillFile(settings.spill_path)
        self.wake = asyncio.Event()  # new rows the flusher may want to see
        self.in_flight = 0  # rows taken by the flush under way
        self.progress_at = wall.monotonic()  # last commit, or rows starting to wait (wall)
        self.spill_failure: str | None = None  # the last spill append failed: why
        self.last_resort: Path | None = None  # once set, no row is ever committed again
        self.last_resort_rows = 0
        self.bad_events = 0

    @property
    def queued(self) -> int:
        """Rows in memory (not the batch in flight)."""
        return self.queue.count

    @property
    def backlog(self) -> int:
        """Rows not yet in Postgres: on the bus, in memory, in flight and in the spill file."""
        return len(self.sub) + self.queue.count + self.in_flight + self.spill.pending

    def stalled_s(self) -> float:
        """Return for how long (wall clock) rows have waited with nothing committed; 0 if none."""
        if not self.backlog:
            return 0.0
        return max(0.0, self._wall.monotonic() - self.progress_at)

    def committed(self) -> None:
        """Note a commit (health's stall time starts again)."""
        self.progress_at = self._wall.monotonic()

    def accept(self, events: list[object]) -> None:
        """Queue the rows of `events`; wake the flusher when it has something to decide."""
        before = self.queue.count
        if not (before or self.in_flight or self.spill.pending):
            self.progress_at = self._wall.monotonic()  # rows start to wait now
        self.queue.add(events, self._clock.time(), self._bad_event)
        metrics.WRITER_BACKLOG.set(self.backlog)
        count = self.queue.count
        # The flusher's deadline follows the oldest row: it needs waking only for a first row
        # (a deadline to set), a full batch, or a queue over the spill limit in an outage.
        if not before or count >= self._settings.batch_rows \
                or count > self._settings.max_buffer_rows:
            self.wake.set()

    def drain_bus(self) -> None:
        """Queue what is still on the bus (at shutdown)."""
        self.queue.add(self.sub.drain(), self._clock.time(), self._bad_event)

    def _bad_event(self, event: object, exc: Exception) -> None:
        self.bad_events += 1
        log.error("writer.bad_event", kind=type(event).__name__, error=repr(exc))

    async def spill_memory(self, why: str) -> bool:
        """Move every row in memory to the spill file, in order; append and fsync in a thread.

        A cancellation waits for the append to end. A failed append puts the rows back and sets
        `spill_failure`; return whether the rows were spilled.
        """
        items = self.queue.take_all()
        if not items:
            return True
        done = asyncio.ensure_future(asyncio.to_thread(self.spill.append, items))
        try:
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                try:
                    await done
                except OSError:
                    self.queue.put_back_items(items, self._clock.time())
                raise
        except OSError as exc:
            self.queue.put_back_items(items, self._clock.time())
            self.spill_failure = describe(exc)
            log.error("writer.spill_failed", rows_kept=len(items), why=why, error=describe(exc),
                      path=str(self.spill.path), detail="the rows stay in memory")
            return False
        finally:
            metrics.WRITER_BACKLOG.set(self.backlog)
        self.spill_failure = None
        log.warning("writer.spilled", rows=len(items), why=why, spilled=self.spill.pending,
                    path=str(self.spill.path))
        return True

    def to_last_resort(self, why: str) -> None:
        """Write every held row (bus and memory) to the last-resort file, on the loop (the engine
        is stopping); from now on nothing may be committed (it would be past these rows)."""
        self.drain_bus()
        items = self.queue.take_all()
        if self.last_resort is None:
            directory = Path(self._settings.last_resort_dir or tempfile.gettempdir())
            self.last_resort = directory / (
                f"arena-last-resort-{os.getpid()}-{int(self._wall.time() * 1000)}.jsonl")
        if not items:
            return
        try:
            self.last_resort.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.last_resort, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                data = memoryview(b"".join(row_to_json(t, r) + b"\n" for t, r in items))
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.critical("writer.rows_lost", rows=len(items), path=str(self.last_resort),
                         error=describe(exc), reason=why)
            return
        self.last_resort_rows += len(items)
        log.critical("writer.last_resort", rows=len(items), path=str(self.last_resort),
                     reason=why, spilled=self.spill.pending, spill_path=str(self.spill.path),
                     detail="replay: append this file to the spill file before the next start")
