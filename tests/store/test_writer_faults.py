"""The writer's error paths: it fails closed, and no row is ever dropped.

A spill append that fails keeps the rows and halts trading until a store takes them; a
cancellation during a spill loses nothing; a connection set-up that fails for a programming
reason and a final flush that can neither commit nor spill end in the last-resort file (exit 1);
a halt holding more than `max_halted_rows` does too; an unreadable spill file halts; health's
stall time and the backlog count rows in flight; a COMMIT lost in a partition is retried on a
connection that first ends the old session holding the rows' locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from engine.bus import Bus
from engine.clock import SimClock
from engine.store.database import connect, writer_session
from engine.store.rows import row_from_json
from engine.store.writer import StorageFatal, Writer
from tests.support.store import (
    CommitEater,
    PgProxy,
    count,
    db_settings,
    eventually,
    fetch,
    file_lines,
    fill,
    migrated,
    running,
)


async def qtys(dsn: str) -> list[float]:
    return [r["qty"] for r in await fetch(dsn, "SELECT qty FROM fills ORDER BY id")]


def last_resort_qtys(writer: Writer) -> list[float]:
    assert writer.last_resort is not None
    return [row_from_json(line)[1][4] for line in file_lines(writer.last_resort) or []]


@pytest.fixture
async def dsn(database_url: str) -> str:
    return await migrated(database_url)


@pytest.fixture
async def proxy(dsn: str) -> AsyncIterator[PgProxy]:
    p = PgProxy(dsn)
    await p.start()
    yield p
    await p.close()


def blocked_spill(tmp_path: Path) -> Path:
    """Return a spill path no append can reach: its directory is a file (a full disk's stand-in
    at the unit level; the whole-engine test uses a real full tmpfs)."""
    blocker = tmp_path / "spill-dir"
    blocker.write_text("not a directory")
    return blocker / "spill.jsonl"


async def test_a_failed_spill_append_keeps_every_row_halts_then_resumes_when_it_succeeds(
    proxy: PgProxy, dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    spill = blocked_spill(tmp_path)
    settings = db_settings(tmp_path, batch_rows=50, flush_ms=100, max_buffer_rows=100,
                           spill_path=str(spill))
    writer = Writer(bus, proxy.dsn, settings, clock, wall=clock)
    await proxy.refuse()
    async with running(writer):
        bus.publish_many(fill(i) for i in range(150))
        await clock.settle()
        await clock.advance(0.1)

        status = writer.status()
        assert writer.gate.halted and "neither committed nor spilled" in status["halted"]
        assert status["backlog"] == 150 and status["spilled_rows"] == 0
        assert status["spill_error"].split(" ")[0] in ("NotADirectoryError:", "FileExistsError:")
        bus.publish_many(fill(i) for i in range(150, 160))  # the page and prices stay up
        await clock.advance(3.0)  # retried (Postgres and the spill), failing
        assert writer.gate.halted and writer.backlog == 160

        spill.parent.unlink()  # the disk has room again
        await clock.advance(3.0)
        assert not writer.gate.halted
        assert writer.status()["spilled_rows"] == 160 and len(file_lines(spill) or []) == 160

        await proxy.start()
        await clock.advance(3.0)
        assert await qtys(dsn) == [float(i) for i in range(160)]
        assert writer.backlog == 0


async def test_a_cancellation_during_a_spill_waits_for_it_and_loses_nothing(
    proxy: PgProxy, dsn: str, bus: Bus, clock: SimClock, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_fsync = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:  # a slow disk
        in_fsync.set()
        time.sleep(0.3)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    settings = db_settings(tmp_path, batch_rows=50, flush_ms=100, max_buffer_rows=100,
                           shutdown_flush_seconds=0.2)
    writer = Writer(bus, proxy.dsn, settings, clock)
    await proxy.refuse()
    task = asyncio.create_task(writer.run())
    bus.publish_many(fill(i) for i in range(150))
    await clock.settle()
    clock_task = asyncio.create_task(clock.advance(0.1))
    await asyncio.to_thread(in_fsync.wait, 5)  # the append is under way in its thread
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await clock_task
    assert len(file_lines(settings.spill_path) or []) == 150
    assert writer.status()["queued_rows"] == 0 and writer.last_resort is None


async def test_a_connection_set_up_failing_for_a_programming_reason_ends_in_the_last_resort(
    database_url: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    # No migrations: the staging tables cannot be made (42P01), which no retry can mend.
    settings = db_settings(tmp_path, flush_ms=10, last_resort_dir=str(tmp_path / "last"))
    writer = Writer(bus, database_url, settings, clock)
    with capture_logs() as logs:
        task = asyncio.create_task(writer.run())
        bus.publish_many(fill(i) for i in range(5))
        await clock.settle()
        await clock.advance(0.01)
        with pytest.raises(StorageFatal):
            await asyncio.wait_for(task, 10)
    assert last_resort_qtys(writer) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert writer.last_resort.parent == tmp_path / "last"  # type: ignore[union-attr]
    [line] = [e for e in logs if e["event"] == "writer.last_resort"]
    assert line["rows"] == 5 and line["path"] == str(writer.last_resort)
    [crash] = [e for e in logs if e["event"] == "writer.crashed"]
    assert "42P01" in crash["error"] and crash["exc_info"] is not None
    assert writer.fatal is not None


async def test_a_final_flush_that_can_neither_commit_nor_spill_writes_the_last_resort(
    proxy: PgProxy, dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    settings = db_settings(tmp_path, flush_ms=10, shutdown_flush_seconds=0.3,
                           spill_path=str(blocked_spill(tmp_path)),
                           last_resort_dir=str(tmp_path))
    writer = Writer(bus, proxy.dsn, settings, clock)
    await proxy.refuse()
    with capture_logs() as logs:
        async with running(writer):
            bus.publish_many(fill(i) for i in range(7))
            await clock.settle()
            await clock.advance(0.01)
    assert last_resort_qtys(writer) == [float(i) for i in range(7)]
    assert writer.fatal is not None and "neither committed nor spilled" in writer.fatal
    [line] = [e for e in logs if e["event"] == "writer.last_resort"]
    assert line["rows"] == 7
    [stopped] = [e for e in logs if e["event"] == "writer.stopped"]
    assert stopped["last_resort_rows"] == 7
    assert await count(dsn, "fills") == 0


async def test_past_max_halted_rows_the_rows_go_to_the_last_resort_and_the_writer_stops(
    proxy: PgProxy, dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    settings = db_settings(tmp_path, batch_rows=50, flush_ms=100, max_buffer_rows=100,
                           max_halted_rows=200, spill_path=str(blocked_spill(tmp_path)),
                           last_resort_dir=str(tmp_path))
    writer = Writer(bus, proxy.dsn, settings, clock, wall=clock)
    await proxy.refuse()
    task = asyncio.create_task(writer.run())
    bus.publish_many(fill(i) for i in range(150))
    await clock.settle()
    await clock.advance(0.1)
    assert writer.gate.halted and not task.done()
    bus.publish_many(fill(i) for i in range(150, 201))
    await clock.settle()
    with pytest.raises(StorageFatal, match="max_halted_rows"):
        await asyncio.wait_for(task, 10)
    assert last_resort_qtys(writer) == [float(i) for i in range(201)]

    # The engine's shutdown runs it once more: later rows follow into the same file, and
    # nothing is committed past them even with Postgres back.
    await proxy.start()
    bus.publish(fill(201))
    async with running(writer):
        await clock.settle()
    assert last_resort_qtys(writer) == [float(i) for i in range(202)]
    assert await count(dsn, "fills") == 0


async def test_an_unreadable_spill_file_halts_until_it_can_be_read(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    spill = tmp_path / "spill.jsonl"
    spill.mkdir()  # not a file: its rows (if any) cannot be counted
    writer = Writer(bus, dsn, db_settings(tmp_path, flush_ms=10, spill_path=str(spill)), clock,
                    wall=clock)
    async with running(writer):
        bus.publish(fill(0))
        await clock.settle()
        await clock.advance(0.01)
        assert writer.gate.halted and "spill file unreadable" in writer.gate.reason  # type: ignore[operator]
        assert await count(dsn, "fills") == 0
        spill.rmdir()
        await clock.advance(2.0)
        assert not writer.gate.halted
        assert await qtys(dsn) == [0.0]


async def test_health_counts_rows_in_flight_and_the_wall_time_nothing_committed(
    proxy: PgProxy, dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    wall = SimClock()
    writer = Writer(bus, proxy.dsn, db_settings(tmp_path, flush_ms=10), clock, wall=wall)
    async with running(writer):
        bus.publish(fill(0))
        await clock.settle()
        await clock.advance(0.01)
        assert writer.stalled_s() == 0.0  # committed, nothing waits

        await proxy.refuse()
        await wall.advance(100.0)  # idle time does not count
        bus.publish(fill(1))
        await clock.settle()
        await wall.advance(4.0)
        await clock.advance(0.01)
        assert writer.status()["backlog"] == 1 and writer.stalled_s() == 4.0
        await wall.advance(7.0)
        assert writer.status()["stalled_s"] == 11.0

        await proxy.start()
        await clock.advance(1.0)
        assert writer.stalled_s() == 0.0 and await qtys(dsn) == [0.0, 1.0]


async def test_the_backlog_counts_the_batch_being_written(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    eater = CommitEater(dsn)
    await eater.start()
    settings = db_settings(tmp_path, flush_ms=10, write_timeout_seconds=30.0)
    writer = Writer(bus, eater.dsn, settings, clock)
    try:
        async with running(writer):
            eater.armed = True
            bus.publish_many(fill(i) for i in range(3))
            await clock.settle()
            flushing = asyncio.create_task(clock.advance(0.01))
            for _ in range(500):
                if eater.eaten:
                    break
                await asyncio.sleep(0.01)
            assert writer.status()["in_flight_rows"] == 3 and writer.backlog == 3
            flushing.cancel()
    finally:
        await eater.close()


async def test_a_commit_lost_in_a_partition_is_retried_past_the_old_sessions_locks(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    eater = CommitEater(dsn)
    await eater.start()
    settings = db_settings(tmp_path, flush_ms=10, write_timeout_seconds=0.5,
                           lock_timeout_seconds=0.2)
    writer = Writer(bus, eater.dsn, settings, clock)
    try:
        with capture_logs() as logs:
            async with running(writer):
                bus.publish(fill(0))
                await clock.settle()
                await clock.advance(0.01)
                assert await qtys(dsn) == [0.0]
                eater.armed = True
                bus.publish_many(fill(i) for i in range(1, 4))
                await clock.settle()
                await clock.advance(0.01)  # the COMMIT is eaten: the flush times out
                assert eater.eaten == 1 and writer.status()["errors"] == 1
                await clock.advance(1.0)  # the retry ends the old session first
                assert await qtys(dsn) == [0.0, 1.0, 2.0, 3.0]
        assert [e["event"] for e in logs if e["event"] == "writer.backend_terminated"] == [
            "writer.backend_terminated"]
    finally:
        await eater.close()


async def test_writer_connections_bound_every_wait_on_the_server(
    dsn: str, tmp_path: Path
) -> None:
    settings = db_settings(tmp_path, statement_timeout_seconds=7.0, lock_timeout_seconds=2.5,
                           idle_in_transaction_timeout_seconds=9.0, keepalive_seconds=12.0)
    conn = await connect(dsn, settings, writer_session(settings))
    try:
        shown = {name: await conn.fetchval(f"SHOW {name}") for name in (
            "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
            "application_name")}
    finally:
        await conn.close()
    assert shown == {"statement_timeout": "7s", "lock_timeout": "2500ms",
                     "idle_in_transaction_session_timeout": "9s",
                     "application_name": "arena-writer"}


async def test_a_halt_moves_the_pending_retry_to_the_wall_clock(
    proxy: PgProxy, dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    """A replay stands still while halted: the writer's retries must then run on wall time."""
    wall = SimClock()
    settings = db_settings(tmp_path, batch_rows=50, flush_ms=100, max_buffer_rows=100,
                           spill_path=str(blocked_spill(tmp_path)))
    writer = Writer(bus, proxy.dsn, settings, clock, wall=wall)
    await proxy.refuse()
    async with running(writer):
        bus.publish(fill(0))
        await clock.settle()
        await clock.advance(0.1)  # refused: a retry is pending on the engine clock
        assert writer.status()["errors"] == 1 and not writer.gate.halted
        bus.publish_many(fill(i) for i in range(1, 150))  # over max_buffer_rows: spill fails

        async def halted() -> bool:  # the append fails in its worker thread
            await clock.settle()
            return writer.gate.halted

        await eventually(halted)
        errors = writer.status()["errors"]

        async def retried() -> bool:  # only the wall clock moves, as in a paused replay
            await wall.advance(0.5)
            await clock.settle()
            return writer.status()["errors"] > errors + 1

        await eventually(retried, 40)
        await proxy.start()

        async def resumed() -> bool:
            await wall.advance(0.5)
            await clock.settle()
            return not writer.gate.halted

        await eventually(resumed, 40)
        assert await qtys(dsn) == [float(i) for i in range(150)]
