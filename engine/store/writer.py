"""The writer: every persisted event on the bus becomes a row in Postgres, and none is lost.

It subscribes when constructed (policy "block"), so nothing published afterwards can be missed.
Rows are batched per table and flushed when a table holds `batch_rows` rows or its oldest row is
`flush_ms` old (engine clock); one flush is one transaction of COPY into a staging table and
`INSERT ... ON CONFLICT (id) DO NOTHING`, so a retried batch never duplicates a row.

While Postgres is down or refusing, rows stay queued and flushing retries with exponential
back-off up to `max_backoff_seconds`; publishing never waits. Beyond `max_buffer_rows` queued rows
the backlog is appended to the spill file, which is replayed (in order, before any newer row of
the same table) as soon as Postgres answers again, and at the next start. Within each table,
rows reach Postgres in publication order: the spill file only ever holds rows older than those in
memory. On cancellation the writer flushes what it has, within `shutdown_flush_seconds`; what
cannot be written goes to the spill file.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from itertools import repeat
from typing import Any

import asyncpg
import structlog

from engine import metrics
from engine.bus import Bus
from engine.clock import Clock
from engine.cycle import CycleContext
from engine.retry import backoff_delay
from engine.settings import DatabaseSettings
from engine.store.database import prepare_connection
from engine.store.rows import ROW_OF, TABLES, Row, to_row, write_batches
from engine.store.spill import SpillFile, replay_chunk

log = structlog.get_logger("writer")

_MIN_BACKOFF_S = 0.5
_CATCH_UP_BATCHES = 16  # a flush takes up to this many batches' rows when that many wait
_INTAKE_BATCH = 8192


class Writer:
    """Batches persisted events per table and writes them to Postgres."""

    def __init__(self, bus: Bus, dsn: str, settings: DatabaseSettings, clock: Clock) -> None:
        self._dsn = dsn
        self._settings = settings
        self._clock = clock
        self._sub = bus.subscribe("writer", ROW_OF.keys(), policy="block",
                                  capacity=max(10_000, 4 * settings.batch_rows))
        self._rows: dict[str, deque[Row]] = {t: deque() for t in TABLES}
        self._times: dict[str, deque[float]] = {t: deque() for t in TABLES}  # arrival per row
        self._queued = 0
        self._retried: dict[str, int] = dict.fromkeys(TABLES, 0)  # rows at the front tried once
        self._spill = SpillFile(settings.spill_path)
        self._conn: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._failures = 0
        self._rng = random.Random()  # back-off jitter; its own generator, not the global one
        self._retry_at: float | None = None
        self._down_since: float | None = None
        self.written = 0
        self.duplicates = 0
        self.flushes = 0
        self.errors = 0
        self.bad_events = 0
        self.last_flush_at: float | None = None
        self.last_flush_rows = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------ public

    @property
    def backlog(self) -> int:
        """Rows not yet in Postgres: on the bus, in memory and in the spill file."""
        return len(self._sub) + self._queued + self._spill.pending

    def status(self) -> dict[str, Any]:
        """Return the backlog, the spill file, the last flush and the errors, for health checks."""
        return {
            "backlog": self.backlog,
            "queued_rows": self._queued + len(self._sub),
            "spilled_rows": self._spill.pending,
            "spill_path": str(self._spill.path),
            "connected": self._conn is not None and not self._conn.is_closed(),
            "down_since": self._down_since,
            "retry_at": self._retry_at,
            "written": self.written,
            "duplicates_skipped": self.duplicates,
            "flushes": self.flushes,
            "last_flush_at": self.last_flush_at,
            "last_flush_rows": self.last_flush_rows,
            "errors": self.errors,
            "last_error": self.last_error,
            "rejected_rows": self._spill.rejected,
            "bad_events": self.bad_events,
        }

    async def run(self) -> None:
        """Write rows until cancelled; then flush (or spill) everything and re-raise."""
        self._spill.refresh()
        if self._spill.pending:
            log.info("writer.spill_found", rows=self._spill.pending, path=str(self._spill.path))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._intake())
                tg.create_task(self._flusher())
        except asyncio.CancelledError:
            await self._shutdown()
            raise
        except BaseException:
            self._spill_memory("crash")
            raise

    # ------------------------------------------------------------ intake

    async def _intake(self) -> None:
        while True:
            events = await self._sub.get_batch(_INTAKE_BATCH)
            self._accept(events)
            self._wake.set()

    def _accept(self, events: list[object]) -> None:
        now = self._clock.time()
        added: dict[str, int] = {}
        for event in events:
            try:
                table, row = to_row(event)
            except Exception as exc:  # a malformed event must not stop the others
                self.bad_events += 1
                log.error("writer.bad_event", kind=type(event).__name__, error=repr(exc))
                continue
            self._rows[table].append(row)
            added[table] = added.get(table, 0) + 1
        for table, n in added.items():
            self._times[table].extend(repeat(now, n))
            self._queued += n
        metrics.WRITER_BACKLOG.set(self.backlog)

    # ------------------------------------------------------------ flushing

    async def _flusher(self) -> None:
        while True:
            await self._wait_for_work()
            async with self._clock.busy():
                await self._step(final=False)

    def _due(self, now: float) -> bool:
        if self._spill.pending:
            return True
        limit = now - self._settings.flush_ms / 1000.0
        return any(len(rows) >= self._settings.batch_rows or (rows and self._times[t][0] <= limit)
                   for t, rows in self._rows.items())

    def _next_deadline(self) -> float | None:
        firsts = [times[0] for times in self._times.values() if times]
        return min(firsts) + self._settings.flush_ms / 1000.0 if firsts else None

    async def _wait_for_work(self) -> None:
        while True:
            now = self._clock.time()
            if self._retry_at is not None and now < self._retry_at:
                if self._queued > self._settings.max_buffer_rows:
                    self._spill_memory("outage")
                deadline: float | None = self._retry_at
            elif self._due(now):
                return
            else:
                deadline = self._next_deadline()
            self._wake.clear()
            await self._sleep_or_wake(deadline)

    async def _sleep_or_wake(self, deadline: float | None) -> None:
        if deadline is None:
            await self._wake.wait()
            return
        sleeper = asyncio.ensure_future(self._clock.sleep_until(deadline))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def _step(self, *, final: bool) -> bool:
        """Do one unit of work (a spill chunk or one flush); return False when Postgres failed."""
        try:
            conn = await self._connection()
            if self._spill.pending:
                await self._replay_chunk(conn)
            else:
                await self._flush(conn, final=final)
        except Exception as exc:  # any failure not caused by the rows: Postgres is unavailable
            await self._failed(exc)
            return False
        if self._down_since is not None:
            log.info("writer.recovered", down_s=round(self._clock.time() - self._down_since, 3),
                     backlog=self.backlog)
        self._failures, self._retry_at, self._down_since = 0, None, None
        return True

    def _take(self, final: bool) -> tuple[dict[str, list[Row]], bool]:
        """Take the due tables' oldest rows; return them and whether none was tried before."""
        now = self._clock.time()
        limit = now - self._settings.flush_ms / 1000.0
        size = self._settings.batch_rows
        batches: dict[str, list[Row]] = {}
        fresh = True
        for table, rows in self._rows.items():
            if rows and (final or len(rows) >= size or self._times[table][0] <= limit):
                # Behind (a burst, or after an outage): catch up with larger transactions.
                n = min(size * _CATCH_UP_BATCHES, len(rows))
                batches[table] = [rows.popleft() for _ in range(n)]
                times = self._times[table]
                for _ in range(n):
                    times.popleft()
                self._queued -= n
                if self._retried[table]:
                    fresh = False
                    self._retried[table] = max(0, self._retried[table] - n)
        return batches, fresh

    def _put_back(self, batches: dict[str, list[Row]], at: float) -> None:
        for table, rows in batches.items():
            self._rows[table].extendleft(reversed(rows))
            self._times[table].extendleft(repeat(at, len(rows)))
            self._queued += len(rows)
            # The failed attempt may have committed after all: retry the duplicate-safe way.
            self._retried[table] = min(len(self._rows[table]), self._retried[table] + len(rows))

    async def _flush(self, conn: asyncpg.Connection, *, final: bool) -> None:
        batches, fresh = self._take(final)
        if not batches:
            return
        started = time.perf_counter()  # flush time is wall time, even in a replay
        try:
            new = await write_batches(conn, batches, fresh=fresh, reject=self._spill.reject,
                                      limit_s=self._settings.write_timeout_seconds)
        except BaseException:
            self._put_back(batches, self._clock.time() - self._settings.flush_ms / 1000.0)
            raise
        elapsed = time.perf_counter() - started
        total = sum(len(rows) for rows in batches.values())
        self.flushes += 1
        self.written += new
        self.duplicates += total - new
        self.last_flush_at = self._clock.time()
        self.last_flush_rows = total
        metrics.WRITER_FLUSH.observe(elapsed)
        for table, rows in batches.items():
            metrics.WRITER_ROWS.labels(table=table).inc(len(rows))
        metrics.WRITER_BACKLOG.set(self.backlog)
        log.debug("writer.flushed", rows=total, new=new, tables=sorted(batches),
                  ms=round(elapsed * 1000, 2), backlog=self.backlog)

    async def _replay_chunk(self, conn: asyncpg.Connection) -> None:
        rows, new = await replay_chunk(conn, self._spill, self._settings.write_timeout_seconds)
        self.written += new
        self.duplicates += rows - new
        metrics.WRITER_BACKLOG.set(self.backlog)
        log.info("writer.replayed", rows=rows, new=new, left=self._spill.pending)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        self._conn = None
        conn = await asyncpg.connect(self._dsn, timeout=self._settings.connect_timeout_seconds)
        try:
            await prepare_connection(conn)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        return conn

    async def _failed(self, exc: Exception) -> None:
        now = self._clock.time()
        self.errors += 1
        self.last_error = repr(exc)
        self._failures += 1
        if self._down_since is None:
            self._down_since = now
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        delay = backoff_delay(self._failures - 1, _MIN_BACKOFF_S,
                              self._settings.max_backoff_seconds, self._rng)
        self._retry_at = now + delay
        if self._queued > self._settings.max_buffer_rows:
            self._spill_memory("outage")
        metrics.WRITER_BACKLOG.set(self.backlog)
        log.warning("writer.backlog", error=repr(exc), attempt=self._failures,
                    retry_in_s=round(delay, 3), backlog=self.backlog,
                    spilled=self._spill.pending, down_s=round(now - self._down_since, 3))

    # ------------------------------------------------------------ spill and shutdown

    def _spill_memory(self, why: str) -> None:
        """Append every row held in memory to the spill file, oldest first per table."""
        if not self._queued:
            return
        items = [(table, row) for table, rows in self._rows.items() for row in rows]
        self._spill.append(items)
        for table in TABLES:
            self._rows[table].clear()
            self._times[table].clear()
            self._retried[table] = 0
        self._queued = 0
        metrics.WRITER_BACKLOG.set(self.backlog)
        log.warning("writer.spilled", rows=len(items), why=why, spilled=self._spill.pending,
                    path=str(self._spill.path))

    async def _shutdown(self) -> None:
        self._accept(self._sub.drain())
        self._sub.close()
        written_before = self.written
        try:
            async with asyncio.timeout(self._settings.shutdown_flush_seconds):
                if self._conn is not None:  # it may have been cut mid-query by the cancellation
                    self._conn.terminate()
                    self._conn = None
                while (self._queued or self._spill.pending) and await self._step(final=True):
                    pass
        except (Exception, asyncio.CancelledError) as exc:
            log.warning("writer.final_flush_failed", error=repr(exc))
        finally:
            self._spill_memory("shutdown")
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None
            # The run's totals; `final_flush` is what the last flush wrote.
            log.info("writer.stopped", written=self.written,
                     final_flush=self.written - written_before, flushes=self.flushes,
                     duplicates_skipped=self.duplicates, errors=self.errors,
                     bad_events=self.bad_events, spilled=self._spill.pending,
                     path=str(self._spill.path))



class PersistStep:
    """Hand the cycle's rows to the writer: wait while it is over capacity (back-pressure)."""

    name = "persistence"

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def __call__(self, ctx: CycleContext) -> None:
        await self._bus.wait_for_capacity()
