"""The writer: every persisted event on the bus becomes a row in Postgres, and none is lost.

It subscribes when constructed (policy "block"), so nothing published afterwards can be missed.
Rows wait in ONE queue, in publication order across every table, and are flushed when it holds
`batch_rows` rows or its oldest row is `flush_ms` old (engine clock). A flush takes the oldest
rows (up to 16 x `batch_rows` when behind) and writes them, whatever their tables, in one
transaction of COPY (rows of one table: one COPY, a transaction by itself; a retried batch goes
through staging tables and `INSERT ... ON CONFLICT (id) DO NOTHING`, so it never duplicates a
row). What is committed is therefore always a prefix of the
event stream (and a flush never ends between a fill and its account snapshot): a committed row
never lacks an event published before it, whenever the process dies.

Every error is sorted by the one table of engine.store.errors:
- an outage (connection lost, timeout, server unavailable): rows stay queued and flushing
  retries with jittered back-off up to `max_backoff_seconds`; publishing never waits. Beyond
  `max_buffer_rows` queued rows the queue is appended to the spill file (in a worker thread: its
  fsync never blocks the event loop), which is replayed in order, in chunks of one transaction
  each, before any row still in memory; the spill file only ever holds rows older than those in
  memory, so the prefix property holds through outages too. When the spill append fails too, the
  rows stay in memory and trading halts (engine.halt) until Postgres or the spill file takes them;
- a row the database refuses: nothing is committed past it; it is recorded in the quarantine
  table, logged and alerted, trading halts, and the batch is retried with back-off until it
  commits or an operator quarantines the row (`run.py db --quarantine ID`);
- a programming error: every held row goes to the last-resort file (`last_resort_dir`), the
  traceback is logged and `StorageFatal` stops the engine (exit 1). Past `max_halted_rows` rows
  held while halted, the same.

The queue belongs to the Writer object the engine holds, not to the task running `run()`: a
restarted `run()` finds every row where it was. On cancellation the writer flushes what it has,
within `shutdown_flush_seconds`; what cannot be written goes to the spill file, and what cannot
be spilled to the last-resort file.

On a simulated clock a flush holds time (`Clock.busy`), so a replay's rows are written at the
simulated times they would be live; while trading is halted the replay consumes no frame, so the
writer's retries wait on the wall clock (`wall`). A backtest's writer is given the wall clock
(`open_store`): nothing in the run reads its rows before the end, so its flushes run beside the
replay rather than stopping it and `flush_ms` is wall time. A replay's and a backtest's writer
commit asynchronously (`asynchronous_commit`: their recording or history can be run again; a commit
returns before its WAL reaches the disk, which loses nothing when the engine dies, only when
Postgres or the machine does, and then Postgres replays WAL in commit order, so what survives is
still a prefix: only the last few commits can be lost, never one without those before it).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from engine import metrics
from engine.bus import Bus
from engine.clock import Clock, LiveClock
from engine.cycle import CycleContext
from engine.halt import TradingGate
from engine.retry import backoff_delay
from engine.settings import DatabaseSettings
from engine.store.database import connect, free_backend, prepare_connection, writer_session
from engine.store.errors import Kind, RowRefused, classify, describe
from engine.store.held import HeldRows
from engine.store.quarantine import record_refused, take_if_quarantined
from engine.store.rows import row_to_json, write_batches
from engine.store.spill import replay_chunk

log = structlog.get_logger("writer")

_MIN_BACKOFF_S = 0.5
_CATCH_UP_BATCHES = 16  # a flush takes up to this many batches' rows when that many wait
_INTAKE_BATCH = 8192


class StorageFatal(Exception):
    """The writer cannot go on (a programming error, or too many rows held while halted): the
    held rows are in the last-resort file and the engine stops with exit code 1."""


class Writer:
    """Queues persisted events in publication order and writes them to Postgres in prefixes."""

    def __init__(self, bus: Bus, dsn: str, settings: DatabaseSettings, clock: Clock, *,
                 asynchronous_commit: bool = False, gate: TradingGate | None = None,
                 wall: Clock | None = None) -> None:
        self._dsn = dsn
        self._asynchronous_commit = asynchronous_commit
        self._settings = settings
        self._clock = clock
        self._wall = wall or LiveClock()  # health's stall time; retries while halted
        self.gate = gate or TradingGate()
        self._held = HeldRows(bus, settings, clock, self._wall)  # the engine's rows
        self._spill = self._held.spill
        self._conn: asyncpg.Connection | None = None
        self._previous_pid: int | None = None  # the backend of the last connection discarded
        self._failures = 0
        self._rng = random.Random()  # back-off jitter; its own generator, not the global one
        self._retry_at: float | None = None
        self._retry_clock: Clock = clock
        self._down_since: float | None = None
        self._started = False
        self._spill_unread: str | None = None  # the spill file could not be counted: why
        self._refused: RowRefused | None = None  # the row the database refuses, while it does
        self._refused_other: str | None = None  # a refusal that names no single row
        self.fatal: str | None = None
        self.written = 0
        self.duplicates = 0
        self.flushes = 0
        self.errors = 0
        self.refused_rows = 0
        self.quarantined = 0
        self.last_flush_at: float | None = None
        self.last_flush_rows = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------ public

    @property
    def _queued(self) -> int:
        return self._held.queued

    @property
    def backlog(self) -> int:
        """Rows not yet in Postgres: on the bus, in memory, in flight and in the spill file."""
        return self._held.backlog

    @property
    def last_resort(self) -> Path | None:
        """The last-resort file, once rows were written to it."""
        return self._held.last_resort

    @property
    def bad_events(self) -> int:
        return self._held.bad_events

    def stalled_s(self) -> float:
        """Return for how long (wall clock) rows have waited with nothing committed; 0 if none."""
        return self._held.stalled_s()

    def status(self) -> dict[str, Any]:
        """Return the backlog, the spill file, the last flush and the errors, for health checks."""
        refused = self._refused
        return {
            "backlog": self.backlog,
            "queued_rows": self._queued + len(self._held.sub),
            "in_flight_rows": self._held.in_flight,
            "spilled_rows": self._spill.pending,
            "spill_path": str(self._spill.path),
            "connected": self._conn is not None and not self._conn.is_closed(),
            "down_since": self._down_since,
            "retry_at": self._retry_at_engine(),
            "stalled_s": round(self.stalled_s(), 3),
            "halted": self.gate.describe(),
            "refused": None if refused is None else {
                "table": refused.table, "id": refused.row_id, "error": describe(refused.cause)},
            "spill_error": self._held.spill_failure or self._spill_unread,
            "written": self.written,
            "duplicates_skipped": self.duplicates,
            "flushes": self.flushes,
            "last_flush_at": self.last_flush_at,
            "last_flush_rows": self.last_flush_rows,
            "errors": self.errors,
            "last_error": self.last_error,
            "refused_rows": self.refused_rows,
            "quarantined_rows": self.quarantined,
            "last_resort": None if self.last_resort is None else str(self.last_resort),
            "last_resort_rows": self._held.last_resort_rows,
            "bad_events": self.bad_events,
        }

    async def run(self) -> None:
        """Write rows until cancelled; then flush (or spill) everything and re-raise.

        A programming error writes every held row to the last-resort file and raises
        `StorageFatal` (the engine exits 1); nothing else ends it.
        """
        if not self._started:
            self._started = True
            self._count_spill()
            if self._spill.pending:
                log.info("writer.spill_found", rows=self._spill.pending,
                         path=str(self._spill.path))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._intake())
                tg.create_task(self._flusher())
        except asyncio.CancelledError:
            await self._shutdown()
            raise
        except BaseExceptionGroup as group:
            if group.subgroup(StorageFatal) is not None:
                raise StorageFatal(self.fatal or "storage fatal") from None
            if group.subgroup(lambda e: not isinstance(e, Exception)) is not None:
                raise  # the process is exiting (KeyboardInterrupt, SystemExit): not ours
            error = group.exceptions[0]  # a programming error in the writer: fail closed
            log.error("writer.crashed", error=describe(error), exc_info=error)
            self._to_last_resort(f"writer crashed: {describe(error)}")
            raise StorageFatal(self.fatal or describe(error)) from error

    # ------------------------------------------------------------ intake

    async def _intake(self) -> None:
        while True:
            self._held.accept(await self._held.sub.get_batch(_INTAKE_BATCH))

    # ------------------------------------------------------------ flushing

    async def _flusher(self) -> None:
        while True:
            await self._wait_for_work()
            async with self._clock.busy():
                await self._step(final=False)

    def _due(self, now: float) -> bool:
        if self._spill.pending or self._held.queue.count >= self._settings.batch_rows:
            return True
        oldest = self._held.queue.oldest()
        return oldest is not None and oldest <= now - self._settings.flush_ms / 1000.0

    def _next_deadline(self) -> float | None:
        oldest = self._held.queue.oldest()
        return None if oldest is None else oldest + self._settings.flush_ms / 1000.0

    def _retry_at_engine(self) -> float | None:
        """The next retry on the engine clock (it may be timed on the wall clock)."""
        if self._retry_at is None:
            return None
        if self._retry_clock is self._clock:
            return self._retry_at
        return self._clock.time() + max(0.0, self._retry_at - self._retry_clock.time())

    async def _wait_for_work(self) -> None:
        while True:
            self._check_halted_bound()
            if self._retry_at is not None:
                if self._retry_clock.time() >= self._retry_at:
                    return
                if self._queued > self._settings.max_buffer_rows \
                        and self._held.spill_failure is None:
                    await self._spill_memory("outage")  # may halt: the retry moves clocks
                    continue
                self._held.wake.clear()
                await self._sleep_or_wake(self._retry_clock, self._retry_at)
                continue
            now = self._clock.time()
            if self._due(now):
                return
            self._held.wake.clear()
            await self._sleep_or_wake(self._clock, self._next_deadline())

    async def _sleep_or_wake(self, clock: Clock, deadline: float | None) -> None:
        if deadline is None:
            await self._held.wake.wait()
            return
        sleeper = asyncio.ensure_future(clock.sleep_until(deadline))
        waker = asyncio.ensure_future(self._held.wake.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def _step(self, *, final: bool) -> bool:
        """Do one unit of work (a spill chunk or one flush); return False when it failed.

        An outage or a refused row is handled here (back-off, spill, halt); a programming error
        propagates (see `run`).
        """
        try:
            if self._spill_unread is not None:
                self._spill.refresh()
                self._spill_unread = None
            conn = await self._connection()
            if self._refused is not None and await take_if_quarantined(conn, self._refused):
                self._drop_quarantined(self._refused)
            if self._spill.pending:
                await self._replay_chunk(conn)
            else:
                await self._flush(conn, final=final)
        except Exception as exc:
            kind = classify(exc)
            if kind is Kind.BUG:
                raise
            if kind is Kind.REFUSED:
                await self._on_refused(exc)
            else:
                await self._failed(exc)
            return False
        if self._down_since is not None:
            log.info("writer.recovered", down_s=round(self._clock.time() - self._down_since, 3),
                     backlog=self.backlog)
        self._failures, self._retry_at, self._down_since = 0, None, None
        self._refused = self._refused_other = None
        if self._queued <= self._settings.max_buffer_rows:
            self._held.spill_failure = None  # memory holds what is left: no spill needed
        self._update_gate()
        return True

    async def _flush(self, conn: asyncpg.Connection, *, final: bool) -> None:
        if not (final or self._due(self._clock.time())):
            return
        names, batches, fresh = self._held.queue.take(
            self._settings.batch_rows * _CATCH_UP_BATCHES, whole_changes=not final)
        if not names:
            return
        total = len(names)
        self._held.in_flight = total
        started = time.perf_counter()  # flush time is wall time, even in a replay
        try:
            new = await write_batches(conn, batches, fresh=fresh,
                                      limit_s=self._settings.write_timeout_seconds)
        except BaseException:
            self._held.queue.put_back(names, batches,
                                 self._clock.time() - self._settings.flush_ms / 1000.0)
            raise
        finally:
            self._held.in_flight = 0
        elapsed = time.perf_counter() - started
        self._held.committed()
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
        self._held.committed()
        self.written += new
        self.duplicates += rows - new
        metrics.WRITER_BACKLOG.set(self.backlog)
        log.info("writer.replayed", rows=rows, new=new, left=self._spill.pending)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        self._conn = None
        conn = await connect(self._dsn, self._settings, writer_session(self._settings))
        try:
            if self._previous_pid is not None:
                await self._free_previous(conn, self._previous_pid)
            await prepare_connection(conn, synchronous_commit=not self._asynchronous_commit)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        return conn

    async def _free_previous(self, conn: asyncpg.Connection, pid: int) -> None:
        """End the discarded connection's backend: a partition can leave it idle in a
        transaction, holding the locks of the rows about to be written again."""
        try:
            if await free_backend(conn, pid):
                log.warning("writer.backend_terminated", pid=pid,
                            detail="the previous connection's session was still alive")
        except asyncpg.InsufficientPrivilegeError as exc:
            log.warning("writer.backend_not_terminated", pid=pid, error=describe(exc),
                        detail="its locks are freed by idle_in_transaction_session_timeout")
        self._previous_pid = None

    def _discard_connection(self) -> None:
        if self._conn is not None:
            self._previous_pid = self._conn.get_server_pid()
            self._conn.terminate()
            self._conn = None

    def _back_off(self) -> float:
        self._failures += 1
        delay = backoff_delay(self._failures - 1, _MIN_BACKOFF_S,
                              self._settings.max_backoff_seconds, self._rng)
        # While halted a replay consumes no frame, so simulated time stands still: wait on the
        # wall clock then.
        self._retry_clock = self._wall if self.gate.storage_halted else self._clock
        self._retry_at = self._retry_clock.time() + delay
        return delay

    async def _failed(self, exc: Exception) -> None:
        now = self._clock.time()
        self.errors += 1
        self.last_error = describe(exc)
        if self._down_since is None:
            self._down_since = now
        self._discard_connection()
        if isinstance(exc, OSError) and self._spill_unread is not None:
            self._spill_unread = describe(exc)
            self._update_gate()
        if self._queued > self._settings.max_buffer_rows:
            await self._spill_memory("outage")
        delay = self._back_off()
        metrics.WRITER_BACKLOG.set(self.backlog)
        log.warning("writer.backlog", error=self.last_error, attempt=self._failures,
                    retry_in_s=round(delay, 3), backlog=self.backlog,
                    spilled=self._spill.pending, down_s=round(now - self._down_since, 3),
                    halted=self.gate.describe())

    async def _on_refused(self, exc: Exception) -> None:
        """A row is refused: keep it and everything after it, record it, halt, retry."""
        self.errors += 1
        self.last_error = describe(exc)
        if isinstance(exc, RowRefused):
            known = self._refused is not None and self._refused.row[0] == exc.row[0]
            self._refused, self._refused_other = exc, None
            if not known:
                self.refused_rows += 1
                log.error("writer.row_refused", table=exc.table, id=exc.row_id,
                          row=row_to_json(exc.table, exc.row).decode(),
                          error=describe(exc.cause),
                          detail="nothing after it commits until it does; quarantine it with "
                                 f"`run.py db --quarantine {exc.row_id}`")
                await self._record_refused(exc)
        else:
            self._refused_other = describe(exc)
            log.error("writer.refused", error=self._refused_other,
                      detail="the database refuses the batch but no single row of it")
        self._update_gate()
        delay = self._back_off()
        log.warning("writer.retrying_refused", retry_in_s=round(delay, 3), attempt=self._failures,
                    backlog=self.backlog)

    async def _record_refused(self, refused: RowRefused) -> None:
        if self._conn is None:
            return
        try:
            await record_refused(self._conn, refused)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("writer.refused_not_recorded", id=refused.row_id, error=describe(exc),
                        detail="recorded at the next retry that refuses it")
            self._refused = None  # so the next refusal records it again
            self._discard_connection()

    def _drop_quarantined(self, refused: RowRefused) -> None:
        if not self._held.queue.remove(refused.table, refused.row[0]):
            self._spill.skip.add(refused.row[0])  # it is in the spill file
        self.quarantined += 1
        self._refused = None
        self._update_gate()

    def _update_gate(self) -> None:
        """Halt trading while a row is refused or rows can be kept neither way; else resume."""
        why = None
        if self._refused is not None:
            r = self._refused
            why = f"row {r.row_id} refused by {r.table}: {describe(r.cause)}"
        elif self._refused_other is not None:
            why = f"rows refused: {self._refused_other}"
        elif self._spill_unread is not None:
            why = f"spill file unreadable: {self._spill_unread}"
        elif self._held.spill_failure is not None:
            why = f"rows can be neither committed nor spilled: {self._held.spill_failure}"
        if why is None:
            self.gate.resume()
        else:
            self.gate.halt(f"storage ({why})")
        # A retry pending on simulated time would never come while the replay stands still.
        clock = self._wall if self.gate.storage_halted else self._clock
        if self._retry_at is not None and clock is not self._retry_clock:
            left = max(0.0, self._retry_at - self._retry_clock.time())
            self._retry_clock, self._retry_at = clock, clock.time() + left
            self._held.wake.set()

    def _check_halted_bound(self) -> None:
        held = self._queued + len(self._held.sub)
        if self.gate.storage_halted and held > self._settings.max_halted_rows:
            self._to_last_resort(f"{held} rows held while halted, over database.max_halted_rows "
                                 f"({self._settings.max_halted_rows})")
            raise StorageFatal(self.fatal)

    def _count_spill(self) -> None:
        try:
            self._spill.refresh()
        except OSError as exc:
            self._spill_unread = describe(exc)
            log.error("writer.spill_unreadable", path=str(self._spill.path), error=describe(exc))
            self._update_gate()

    # ------------------------------------------------------------ spill, last resort, shutdown

    async def _spill_memory(self, why: str) -> bool:
        """Spill every row in memory (engine.store.held); halt or resume by the outcome."""
        try:
            return await self._held.spill_memory(why)
        finally:
            self._update_gate()

    def _to_last_resort(self, why: str) -> None:
        self.fatal = self.fatal or why
        self._held.to_last_resort(why)

    async def _shutdown(self) -> None:
        self._held.drain_bus()
        self._held.sub.close()
        written_before = self.written
        if self.last_resort is not None:  # nothing may commit past the last-resort rows
            self._to_last_resort(self.fatal or "shutdown after the last-resort file")
        else:
            await self._final_flush()
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        # The run's totals; `final_flush` is what the last flush wrote.
        log.info("writer.stopped", written=self.written,
                 final_flush=self.written - written_before, flushes=self.flushes,
                 duplicates_skipped=self.duplicates, errors=self.errors,
                 bad_events=self.bad_events, spilled=self._spill.pending,
                 path=str(self._spill.path), refused_rows=self.refused_rows,
                 quarantined=self.quarantined, last_resort_rows=self._held.last_resort_rows,
                 last_resort=None if self.last_resort is None else str(self.last_resort))

    async def _final_flush(self) -> None:
        try:
            async with asyncio.timeout(self._settings.shutdown_flush_seconds):
                if self._conn is not None:  # it may have been cut mid-query by the cancellation
                    self._conn.terminate()
                    self._conn = None
                while (self._queued or self._spill.pending) and await self._step(final=True):
                    pass
        except (Exception, asyncio.CancelledError) as exc:
            if not isinstance(exc, (TimeoutError, asyncio.CancelledError)):
                self.fatal = self.fatal or f"final flush failed: {describe(exc)}"
                log.error("writer.final_flush_crashed", error=describe(exc), exc_info=exc)
            else:
                log.warning("writer.final_flush_failed", error=describe(exc))
        if not self._queued:
            return
        try:
            spilled = await self._spill_memory("shutdown")
        except asyncio.CancelledError:  # cancelled again: the append itself went on to its end
            spilled = not self._queued
        if not spilled:
            self._to_last_resort(f"shutdown: rows can be neither committed nor spilled "
                                 f"({self._held.spill_failure})")


class PersistStep:
    """Hand the cycle's rows to the writer: wait while it is over capacity (back-pressure)."""

    name = "persistence"

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def __call__(self, ctx: CycleContext) -> None:
        await self._bus.wait_for_capacity()
