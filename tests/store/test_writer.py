"""The writer: batching by size and age, no duplicates, outages, spill and replay, shutdown."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from engine.bus import Bus
from engine.clock import SimClock
from engine.events import JobRun, OrderFilled
from engine.store.writer import Writer
from tests.support.store import (
    PgProxy,
    append_bytes,
    count,
    db_settings,
    eventually,
    fetch,
    file_lines,
    fill,
    migrated,
    running,
    snapshot,
)


async def qtys(dsn: str) -> list[float]:
    """Return the fills' qty column in the order the rows were stored."""
    return [r["qty"] for r in await fetch(dsn, "SELECT qty FROM fills")]


@pytest.fixture
async def dsn(database_url: str) -> str:
    return await migrated(database_url)


@pytest.fixture
async def proxy(dsn: str) -> PgProxy:
    p = PgProxy(dsn)
    await p.start()
    yield p
    await p.close()


async def test_flushes_as_soon_as_a_table_holds_batch_rows(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    writer = Writer(bus, dsn, db_settings(tmp_path, batch_rows=50, flush_ms=60_000), clock)
    async with running(writer):
        bus.publish_many(fill(i) for i in range(49))
        await clock.settle()
        assert await count(dsn, "fills") == 0

        bus.publish(fill(49))
        await clock.settle()
        assert await count(dsn, "fills") == 50  # time has not moved
        assert writer.status()["backlog"] == 0


async def test_a_deep_backlog_is_written_in_larger_transactions(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    writer = Writer(bus, dsn, db_settings(tmp_path, batch_rows=10, flush_ms=60_000), clock)
    async with running(writer):
        bus.publish_many(fill(i) for i in range(205))
        await clock.settle()

        assert await qtys(dsn) == [float(i) for i in range(205)]
        assert writer.status()["flushes"] == 2  # 160 + 45 rows
        assert writer.status()["backlog"] == 0


async def test_keeps_a_small_batch_until_its_oldest_row_is_flush_ms_old(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    writer = Writer(bus, dsn, db_settings(tmp_path, batch_rows=500, flush_ms=250), clock)
    async with running(writer):
        bus.publish_many(fill(i) for i in range(3))
        await clock.settle()
        await clock.advance(0.125)
        bus.publish(fill(3))
        await clock.settle()
        await clock.advance(0.0625)
        assert await count(dsn, "fills") == 0

        await clock.advance(0.0625)  # the first rows are now 250 ms old
        assert await count(dsn, "fills") == 4
        assert writer.last_flush_rows == 4


async def test_rows_reach_each_table_in_publication_order(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    writer = Writer(bus, dsn, db_settings(tmp_path, batch_rows=7, flush_ms=10), clock)
    async with running(writer):
        for i in range(100):
            bus.publish(fill(i))
            await clock.settle()
            bus.publish(snapshot("claude", 10_000.0 + i, 1_767_225_600.0 + i))
            await clock.settle()
            if i % 13 == 0:
                await clock.advance(0.01)
        await clock.advance(0.01)

        assert await qtys(dsn) == [float(i) for i in range(100)]
        equities = await fetch(dsn, "SELECT equity FROM account_snapshots")
        assert [r["equity"] for r in equities] == [10_000.0 + i for i in range(100)]


async def test_a_retried_batch_inserts_no_duplicates(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    events = [fill(i) for i in range(10)]
    writer = Writer(bus, dsn, db_settings(tmp_path, batch_rows=10), clock)
    async with running(writer):
        bus.publish_many(events)
        await clock.settle()
        bus.publish_many(events)  # the same events (same ids) again, as a retry would send
        await clock.settle()

        assert await count(dsn, "fills") == 10
        assert writer.status()["written"] == 10
        assert writer.status()["duplicates_skipped"] == 10


async def test_an_outage_loses_no_row_and_trading_goes_on(
    proxy: PgProxy, dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    writer = Writer(bus, proxy.dsn, db_settings(tmp_path, batch_rows=10, flush_ms=100), clock)
    async with running(writer):
        bus.publish_many(fill(i) for i in range(10))
        await clock.settle()
        assert await count(dsn, "fills") == 10

        await proxy.refuse()
        bus.publish_many(fill(i) for i in range(10, 35))  # publish never blocks
        await clock.settle()
        await clock.advance(0.1)
        status = writer.status()
        assert status["backlog"] == 25
        assert status["errors"] >= 1
        assert status["retry_at"] is not None
        await clock.advance(5.0)  # several retries, all refused
        assert writer.status()["errors"] >= 2
        assert await count(dsn, "fills") == 10

        await proxy.start()
        await clock.advance(1.0)  # the next retry finds Postgres back

        assert await qtys(dsn) == [float(i) for i in range(35)]
        assert writer.status()["backlog"] == 0
        assert writer.status()["down_since"] is None


async def test_a_connection_cut_mid_run_loses_no_row(
    proxy: PgProxy, dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    writer = Writer(bus, proxy.dsn, db_settings(tmp_path, batch_rows=5, flush_ms=100), clock)
    async with running(writer):
        bus.publish_many(fill(i) for i in range(5))
        await clock.settle()
        proxy.cut()
        bus.publish_many(fill(i) for i in range(5, 12))
        await clock.settle()
        await clock.advance(0.1)
        await clock.advance(1.0)

        assert await qtys(dsn) == [float(i) for i in range(12)]


async def test_backoff_grows_and_is_capped(
    proxy: PgProxy, dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    writer = Writer(bus, proxy.dsn, db_settings(tmp_path, flush_ms=1, max_backoff_seconds=4.0),
                    clock)
    await proxy.refuse()
    async with running(writer):
        bus.publish(fill(1))
        await clock.settle()
        delays = []
        for _ in range(7):
            await clock.advance(0.001)
            retry_at = writer.status()["retry_at"]
            delays.append(retry_at - clock.time())
            await clock.advance_to(retry_at)
        assert delays[0] <= 0.5
        assert delays[2] > delays[0]
        assert max(delays) <= 4.0
        assert delays[-1] >= 0.5 * 4.0  # engine.retry: jitter within [cap/2, cap]


async def test_beyond_max_buffer_rows_the_backlog_spills_and_replays_exactly_once(
    proxy: PgProxy, dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    settings = db_settings(tmp_path, batch_rows=50, flush_ms=100, max_buffer_rows=100)
    spill = Path(settings.spill_path)
    writer = Writer(bus, proxy.dsn, settings, clock)
    await proxy.refuse()
    async with running(writer):
        bus.publish_many(fill(i) for i in range(150))
        await clock.settle()
        await clock.advance(0.1)
        assert writer.status()["spilled_rows"] == 150
        assert len(file_lines(spill)) == 150
        bus.publish_many(fill(i) for i in range(150, 170))  # newer rows stay in memory
        await clock.settle()
        await clock.advance(0.1)
        assert writer.status()["queued_rows"] == 20
        assert writer.status()["backlog"] == 170

        await proxy.start()
        await clock.advance(1.0)
        await clock.advance(0.1)

        assert await qtys(dsn) == [float(i) for i in range(170)]  # spill first, then memory
        assert file_lines(spill) == []
        assert writer.status()["backlog"] == 0


async def test_shutdown_flushes_every_row_it_has(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    writer = Writer(bus, dsn, db_settings(tmp_path, flush_ms=60_000), clock)
    async with running(writer):
        bus.publish_many(fill(i) for i in range(3))
        await clock.settle()
        bus.publish_many(fill(i) for i in range(3, 5))  # still on the bus when cancelled
        await clock.settle()
    assert await qtys(dsn) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert file_lines(writer.status()["spill_path"]) is None


async def test_shutdown_during_an_outage_spills_and_the_next_start_replays(
    proxy: PgProxy, dsn: str, clock: SimClock, tmp_path: Path
) -> None:
    settings = db_settings(tmp_path, flush_ms=100, shutdown_flush_seconds=0.5)
    bus = Bus()
    writer = Writer(bus, proxy.dsn, settings, clock)
    await proxy.refuse()
    async with running(writer):
        bus.publish_many(fill(i) for i in range(8))
        await clock.settle()
        await clock.advance(0.1)
    assert len(file_lines(settings.spill_path)) == 8
    assert await count(dsn, "fills") == 0

    bus = Bus()
    second = Writer(bus, dsn, settings, clock)
    assert second.status()["backlog"] == 0  # counted when it runs
    async with running(second):
        bus.publish(fill(8))
        await clock.settle()
        await clock.advance(0.1)
        assert await qtys(dsn) == [float(i) for i in range(9)]
    assert file_lines(settings.spill_path) == []


async def test_a_torn_last_spill_line_is_skipped_and_the_rest_replayed(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    from engine.store.spill import SpillFile

    settings = db_settings(tmp_path)
    spill = SpillFile(settings.spill_path)
    from engine.store.rows import to_row

    spill.append(to_row(fill(i)) for i in range(3))
    append_bytes(settings.spill_path, b'{"t": "fills", "r": ["0190')  # a crash mid-append
    spill.append([to_row(fill(3))])  # appending after a torn line starts a new line

    writer = Writer(bus, dsn, settings, clock)
    async with running(writer):
        await clock.settle()
        assert await qtys(dsn) == [0.0, 1.0, 2.0, 3.0]
        assert writer.status()["spilled_rows"] == 0


async def test_a_row_postgres_refuses_halts_trading_and_nothing_after_it_commits(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    settings = db_settings(tmp_path, batch_rows=5)
    bad = OrderFilled(trader="nul\x00byte", symbol="BTCUSDT", side="buy", qty=99.0, price=1.0,
                      notional=1.0, fee=0.0, realized_pnl=0.0, reason="decision", cycle_id=None,
                      ref_price=None, ts=1_767_225_600.0)
    writer = Writer(bus, dsn, settings, clock, wall=clock)
    async with running(writer):
        bus.publish_many([fill(0), fill(1), bad, fill(2), fill(3)])
        await clock.settle()
        await clock.advance(3.0)  # retried with back-off: refused each time

        assert await qtys(dsn) == []
        status = writer.status()
        assert status["halted"].startswith(f"halted: storage (row {bad.id} refused by fills")
        assert status["refused"]["id"] == str(bad.id) and "22021" in status["refused"]["error"]
        assert status["backlog"] == 5 and status["refused_rows"] == 1 and status["errors"] >= 2
        recorded = await fetch(dsn, "SELECT table_name, error, quarantined_at FROM quarantine")
        assert [(r["table_name"], r["quarantined_at"]) for r in recorded] == [("fills", None)]
    assert not (tmp_path / "spill.rejected.jsonl").exists()


async def test_a_quarantined_row_leaves_the_stream_and_the_writer_goes_on(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    from engine.store.quarantine import quarantine

    bad = OrderFilled(trader="nul\x00byte", symbol="BTCUSDT", side="buy", qty=99.0, price=1.0,
                      notional=1.0, fee=0.0, realized_pnl=0.0, reason="decision", cycle_id=None,
                      ref_price=None, ts=1_767_225_600.0)
    writer = Writer(bus, dsn, db_settings(tmp_path, batch_rows=5), clock, wall=clock)
    async with running(writer):
        bus.publish_many([fill(0), fill(1), bad, fill(2), fill(3)])
        await clock.settle()
        assert writer.gate.halted

        said = await quarantine(dsn, str(bad.id))
        assert said.startswith(f"row {bad.id} of fills quarantined")
        await clock.advance(2.0)  # the next retry takes it out

        assert await qtys(dsn) == [0.0, 1.0, 2.0, 3.0]
        assert not writer.gate.halted
        assert writer.status()["quarantined_rows"] == 1 and writer.status()["backlog"] == 0
        moved = await fetch(dsn, "SELECT row_json, moved_at IS NOT NULL AS moved FROM quarantine")
        assert moved[0]["moved"] and "nul\\u0000byte" in moved[0]["row_json"]
    with pytest.raises(ValueError, match="no refused row"):
        await quarantine(dsn, str(fill(9).id))


async def test_a_malformed_event_is_counted_and_skipped(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    writer = Writer(bus, dsn, db_settings(tmp_path, flush_ms=10), clock)
    broken = JobRun(job="x", trigger="manual", started_at="soon",  # type: ignore[arg-type]
                    finished_at=1.0, status="ok")
    async with running(writer):
        bus.publish_many([fill(0), broken, fill(1)])
        await clock.settle()
        await clock.advance(0.01)
        assert await qtys(dsn) == [0.0, 1.0]
        assert writer.status()["bad_events"] == 1


async def test_a_row_with_a_value_of_the_wrong_type_is_refused_and_halts(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    writer = Writer(bus, dsn, db_settings(tmp_path, flush_ms=10), clock, wall=clock)
    broken = snapshot("claude", 1.0, "not a time")  # type: ignore[arg-type]
    async with running(writer):
        bus.publish_many([fill(0), broken, snapshot("claude", 2.0, 1_767_225_600.0)])
        await clock.settle()
        await clock.advance(0.01)
        assert await count(dsn, "fills") == 0  # nothing commits, not even before it
        assert writer.status()["refused"]["table"] == "account_snapshots"
        assert "TypeError" in writer.status()["refused"]["error"]
        assert writer.gate.halted


async def test_nothing_published_after_construction_is_missed(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    writer = Writer(bus, dsn, db_settings(tmp_path, flush_ms=10), clock)
    bus.publish(fill(0))  # before run() starts
    assert writer.backlog == 1
    async with running(writer):
        await clock.settle()
        await clock.advance(0.01)
        assert await count(dsn, "fills") == 1


def test_publishing_is_not_slowed_by_an_unreachable_database(tmp_path: Path) -> None:
    async def main() -> int:
        bus, clock = Bus(), SimClock()
        Writer(bus, "postgresql://postgres@127.0.0.1:9/none", db_settings(tmp_path), clock)
        bus.publish_many(fill(i) for i in range(1000))
        return bus.stats()["writer"]["queued"]

    assert asyncio.run(main()) == 1000


async def test_the_spill_files_fsync_runs_off_the_event_loop(
    proxy: PgProxy, dsn: str, bus: Bus, clock: SimClock, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop_thread = threading.get_ident()
    fsync_threads: list[int] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:  # a slow disk during an outage
        fsync_threads.append(threading.get_ident())
        time.sleep(0.3)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    settings = db_settings(tmp_path, batch_rows=50, flush_ms=100, max_buffer_rows=100)
    writer = Writer(bus, proxy.dsn, settings, clock)
    await proxy.refuse()
    gaps: list[float] = []

    async def loop_turns() -> None:  # measures how long the loop goes without a turn
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with running(writer):
        watcher = asyncio.create_task(loop_turns())
        await asyncio.sleep(0)
        bus.publish_many(fill(i) for i in range(150))  # the flush fails; over max_buffer_rows
        await clock.settle()

        async def spilled() -> bool:
            return writer.status()["spilled_rows"] == 150

        await eventually(spilled)
        watcher.cancel()
        await proxy.start()
    assert fsync_threads and loop_thread not in fsync_threads
    # The loop kept turning through the 0.3 s fsync (the watcher stops right as the spill ends,
    # so its gaps add up to about the fsync time, not more): many short turns, no long one.
    assert sum(gaps) > 0.25 and len(gaps) > 20 and max(gaps) < 0.2
    assert await qtys(dsn) == [float(i) for i in range(150)]


async def test_an_asynchronous_commit_writer_turns_synchronous_commit_off_for_its_session(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    settings = db_settings(tmp_path, batch_rows=5, flush_ms=60_000)
    for asynchronous, expected in ((False, "on"), (True, "off")):
        writer = Writer(Bus(), dsn, settings, clock, asynchronous_commit=asynchronous)
        conn = await writer._connection()
        assert await conn.fetchval("SHOW synchronous_commit") == expected
        conn.terminate()
    writer = Writer(bus, dsn, settings, clock, asynchronous_commit=True)
    async with running(writer):
        bus.publish_many(fill(i) for i in range(12))
        await clock.settle()
        assert await qtys(dsn) == [float(i) for i in range(12)]


async def test_rows_trickling_in_are_flushed_at_a_full_batch_or_the_oldest_rows_deadline(
    dsn: str, bus: Bus, clock: SimClock, tmp_path: Path
) -> None:
    writer = Writer(bus, dsn, db_settings(tmp_path, batch_rows=10, flush_ms=250), clock)
    async with running(writer):
        bus.publish(fill(0))  # a first row sets the flusher's deadline
        await clock.settle()
        for i in range(1, 9):  # more rows, one publication each: the deadline stays
            bus.publish(fill(i))
            await clock.settle()
        assert await count(dsn, "fills") == 0
        bus.publish(fill(9))  # a full batch
        await clock.settle()
        assert await count(dsn, "fills") == 10
        bus.publish(fill(10))
        await clock.settle()
        await clock.advance(0.25)  # the new oldest row's deadline
        assert await qtys(dsn) == [float(i) for i in range(11)]
