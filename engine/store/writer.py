"""The writer: every persisted event on the bus becomes a row in Postgres, and none is lost.

It subscribes when constructed (policy "block"), so nothing published afterwards can be missed.
Rows wait in ONE queue, in publication order across every table, and are flushed when it holds
`batch_rows` rows or its oldest row is `flush_ms` old (engine clock). A flush takes the oldest
rows (up to 16 x `batch_rows` when behind) and writes them, whatever their tables, in one
transaction of COPY (a retried batch goes through staging tables and `INSERT ... ON CONFLICT (id)
DO NOTHING`, so it never duplicates a row). What is committed is therefore always a prefix of the
event stream (and a flush never ends between a fill and its account snapshot): a committed row
never lacks an event published before it, whenever the process dies.

While Postgres is down or refusing, rows stay queued and flushing retries with jittered back-off
up to `max_backoff_seconds`; publishing never waits. Beyond `max_buffer_rows` queued rows the
queue is appended to the spill file (in a worker thread: its fsync never blocks the event loop),
which is replayed in order, in chunks of one transaction each, before any row still in memory, as
soon as Postgres answers again and at the next start; the spill file only ever holds rows older
than those in memory, so the prefix property holds through outages too. On cancellation the
writer flushes what it has, within `shutdown_flush_seconds`; what cannot be written goes to the
spill file.

On a simulated clock a flush holds time (`Clock.busy`), so a replay's rows are written at the
simulated times they would be live. A backtest's writer is given the wall clock instead
(`open_store`): nothing in the run reads its rows before the end, so its flushes run beside the
replay rather than stopping it, `flush_ms` is wall time, and it commits asynchronously
(`asynchronous_commit`: Postgres replays WAL in commit order after a crash, so what survives is
still a prefix; only the last few commits can be lost, never one without those before it).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import asyncpg
import structlog

from engine import metrics
from engine.bus import Bus
from engine.clock import Clock
from engine.cycle import CycleContext
from engine.retry import backoff_delay
from engine.settings import DatabaseSettings
from engine.store.backlog import RowQueue
from engine.store.database import prepare_connection
from engine.store.rows import ROW_OF, write_batches
from engine.store.spill import SpillFile, replay_chunk

log = structlog.get_logger("writer")

_MIN_BACKOFF_S = 0.5
_CATCH_UP_BATCHES = 16  # a flush takes up to this many batches' rows when that many wait
_INTAKE_BATCH = 8192


class Writer:
    """Queues persisted events in publication order and writes them to Postgres in prefixes."""

    def __init__(self, bus: Bus, dsn: str, settings: DatabaseSettings, clock: Clock, *,
                 asynchronous_commit: bool = False) -> None:
        self._dsn = dsn
        self._asynchronous_commit = asynchronous_commit
        self._settings = settings
        self._clock = clock
        self._sub = bus.subscribe("writer", ROW_OF.keys(), policy="block",
                                  capacity=max(10_000, 4 * settings.batch_rows))
        self._queue = RowQueue()  # rows in publication order across tables (engine.store.backlog)
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
    def _queued(self) -> int:
        return self._queue.count

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
            self._spill.append(self._queue.take_all())  # dying anyway: on the loop
            raise

    # ------------------------------------------------------------ intake

    async def _intake(self) -> None:
        while True:
            events = await self._sub.get_batch(_INTAKE_BATCH)
            self._accept(events)

    def _accept(self, events: list[object]) -> None:
        before = self._queue.count
        self._queue.add(events, self._clock.time(), self._bad_event)
        metrics.WRITER_BACKLOG.set(self.backlog)
        count = self._queue.count
        # The flusher's deadline follows the oldest row: it needs waking only for a first row
        # (a deadline to set), a full batch, or a queue over the spill limit in an outage.
        if not before or count >= self._settings.batch_rows \
                or count > self._settings.max_buffer_rows:
            self._wake.set()

    def _bad_event(self, event: object, exc: Exception) -> None:
        self.bad_events += 1
        log.error("writer.bad_event", kind=type(event).__name__, error=repr(exc))

    # ------------------------------------------------------------ flushing

    async def _flusher(self) -> None:
        while True:
            await self._wait_for_work()
            async with self._clock.busy():
                await self._step(final=False)

    def _due(self, now: float) -> bool:
        if self._spill.pending or self._queue.count >= self._settings.batch_rows:
            return True
        oldest = self._queue.oldest()
        return oldest is not None and oldest <= now - self._settings.flush_ms / 1000.0

    def _next_deadline(self) -> float | None:
        oldest = self._queue.oldest()
        return None if oldest is None else oldest + self._settings.flush_ms / 1000.0

    async def _wait_for_work(self) -> None:
        while True:
            now = self._clock.time()
            if self._retry_at is not None and now < self._retry_at:
                if self._queued > self._settings.max_buffer_rows:
                    await self._spill_memory("outage")
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

    async def _flush(self, conn: asyncpg.Connection, *, final: bool) -> None:
        if not (final or self._due(self._clock.time())):
            return
        names, batches, fresh = self._queue.take(
            self._settings.batch_rows * _CATCH_UP_BATCHES, whole_changes=not final)
        if not names:
            return
        started = time.perf_counter()  # flush time is wall time, even in a replay
        try:
            new = await write_batches(conn, batches, fresh=fresh, reject=self._spill.reject,
                                      limit_s=self._settings.write_timeout_seconds)
        except BaseException:
            self._queue.put_back(names, batches,
                                 self._clock.time() - self._settings.flush_ms / 1000.0)
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
            await prepare_connection(conn, synchronous_commit=not self._asynchronous_commit)
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
            await self._spill_memory("outage")
        metrics.WRITER_BACKLOG.set(self.backlog)
        log.warning("writer.backlog", error=repr(exc), attempt=self._failures,
                    retry_in_s=round(delay, 3), backlog=self.backlog,
                    spilled=self._spill.pending, down_s=round(now - self._down_since, 3))

    # ------------------------------------------------------------ spill and shutdown

    async def _spill_memory(self, why: str) -> None:
        """Move every row in memory to the spill file, in order; append and fsync in a thread.

        A cancellation waits for the append to end; a failed append puts the rows back.
        """
        items = self._queue.take_all()
        if not items:
            return
        done = asyncio.ensure_future(asyncio.to_thread(self._spill.append, items))
        try:
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                await done
                raise
        except Exception:
            self._queue.put_back_items(items, self._clock.time())
            raise
        finally:
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
            try:
                await self._spill_memory("shutdown")
            except (Exception, asyncio.CancelledError) as exc:  # last resort: on the loop
                log.warning("writer.spill_retry", error=repr(exc))
                self._spill.append(self._queue.take_all())
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
