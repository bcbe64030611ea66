"""Writer benchmark: rows/s through the Writer (COPY batches) vs one INSERT per row, flush p99.

Uses TEST_DATABASE_URL when set (a scratch database is created and dropped there), else an
embedded pgserver in a temporary directory. Throughput is the whole path: events published on
the bus, turned into rows, batched and written, timed until the last row is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import tempfile
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import uvloop

from bench.common import Result, at_least, at_most, p99, timer
from engine.bus import Bus
from engine.clock import LiveClock
from engine.events import OrderFilled
from engine.settings import DatabaseSettings
from engine.store.database import migrate, prepare_connection
from engine.store.rows import TABLES, to_row, write_batches
from engine.store.writer import Writer

_FLUSH_P99_TARGET_MS = 250.0  # flush_ms: a flush slower than that would delay the next batch


def _fills(n: int) -> list[OrderFilled]:
    return [OrderFilled(trader=f"t{i % 5}", symbol="BTCUSDT", side="buy" if i % 2 else "sell",
                        qty=0.001 * (i % 100 + 1), price=100_000.0 + i % 1000, notional=100.0,
                        fee=0.05, realized_pnl=0.0, reason="decision", cycle_id=f"c{i // 1000}",
                        ref_price=100_000.0, ts=1_767_225_600.0 + i * 0.001) for i in range(n)]


@contextlib.asynccontextmanager
async def _scratch_database() -> AsyncIterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    server = None
    if not url:
        import pgserver

        tmp = tempfile.mkdtemp(prefix="arena-bench-pg-")
        server = await asyncio.to_thread(pgserver.get_server, tmp, cleanup_mode="delete")
        url = server.get_uri()
    name = f"arena_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield urlunsplit(urlsplit(url)._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        if server is not None:
            await asyncio.to_thread(server.cleanup)


async def _truncate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute("TRUNCATE fills")
    await conn.close()


async def _through_writer(dsn: str, events: list[OrderFilled], spill_dir: str) -> float:
    """Publish every event and time until the writer has committed them all; return rows/s."""
    await _truncate(dsn)
    bus = Bus()
    settings = DatabaseSettings(spill_path=os.path.join(spill_dir, "spill.jsonl"))
    writer = Writer(bus, dsn, settings, LiveClock())
    task = asyncio.create_task(writer.run())
    await asyncio.sleep(0.05)  # let it connect: the connection is not part of the rate
    start = timer()
    bus.publish_many(events)
    while writer.written < len(events):
        await asyncio.sleep(0.002)
    elapsed = timer() - start
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return len(events) / elapsed


async def _per_row_inserts(dsn: str, events: list[OrderFilled]) -> float:
    """Insert each row with its own INSERT statement (autocommit); return rows/s."""
    await _truncate(dsn)
    t = TABLES["fills"]
    sql = (f"INSERT INTO fills ({', '.join(t.columns)}) VALUES "
           f"({', '.join(f'${i + 1}' for i in range(len(t.columns)))}) ON CONFLICT (id) DO NOTHING")
    conn = await asyncpg.connect(dsn)
    try:
        await prepare_connection(conn)  # the same row values as the writer's
        stmt = await conn.prepare(sql)
        start = timer()
        for e in events:
            await stmt.fetch(*to_row(e)[1])
        elapsed = timer() - start
    finally:
        await conn.close()
    return len(events) / elapsed


async def _flush_latencies(dsn: str, batches: int) -> list[float]:
    """Time `batches` flushes of 500 new rows, each one transaction, as the writer makes them."""
    await _truncate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await prepare_connection(conn)
        samples = []
        for _ in range(batches + 5):
            rows = [to_row(e)[1] for e in _fills(500)]
            start = timer()
            await write_batches(conn, {"fills": rows}, fresh=True, limit_s=30, reject=_refuse)
            samples.append((timer() - start) * 1000)
        return samples[5:]  # warm-up
    finally:
        await conn.close()


def _refuse(table: str, row: tuple[object, ...], exc: BaseException) -> None:
    raise AssertionError(f"benchmark row refused: {exc!r}")


async def _main(quick: bool) -> list[Result]:
    n_copy = 50_000 if quick else 200_000
    n_row = 2_000 if quick else 10_000
    runs = 3 if quick else 5
    copy_events = _fills(n_copy)
    row_events = _fills(n_row)
    async with _scratch_database() as dsn:
        await migrate(dsn)
        with tempfile.TemporaryDirectory(prefix="arena-bench-spill-") as spill_dir:
            # Side by side: each pair runs back to back, so machine noise hits both alike.
            pairs = []
            for i in range(runs + 1):
                copy_rate = await _through_writer(dsn, copy_events, spill_dir)
                row_rate = await _per_row_inserts(dsn, row_events)
                if i:  # the first pair is the warm-up
                    pairs.append((copy_rate, row_rate))
        flush_ms = await _flush_latencies(dsn, 100 if quick else 300)
    copy_rate = statistics.median(c for c, _ in pairs)
    row_rate = statistics.median(r for _, r in pairs)
    ratio = statistics.median(c / r for c, r in pairs)
    p99_ms = p99(flush_ms)
    return [
        Result("writer_copy_rows_per_s", round(copy_rate), "rows/s", ">= 100000",
               at_least(copy_rate, 100_000),
               f"{n_copy} fills published at once through Writer (batch 500), median of {runs}"),
        Result("writer_insert_per_row_rows_per_s", round(row_rate), "rows/s", "", None,
               f"{n_row} fills, one prepared INSERT per row, autocommit"),
        Result("writer_copy_vs_insert_ratio", round(ratio, 1), "x", ">= 50", at_least(ratio, 50),
               f"median of {runs} per-pair ratios, each pair run back to back"),
        Result("writer_flush_500_p99_ms", round(p99_ms, 2), "ms", f"<= {_FLUSH_P99_TARGET_MS:g}",
               at_most(p99_ms, _FLUSH_P99_TARGET_MS),
               f"{len(flush_ms)} flushes of 500 new fills (one transaction, COPY), "
               f"median {sorted(flush_ms)[len(flush_ms) // 2]:.2f} ms"),
    ]


def run(quick: bool = False) -> list[Result]:
    """Run the writer benchmark and return its figures."""
    return uvloop.run(_main(quick))


if __name__ == "__main__":
    for r in run(quick=bool(os.environ.get("QUICK"))):
        print(f"{r.name:40s} {r.value:>12} {r.unit:7s} target {r.target or '-':10s} "
              f"{'ok' if r.met else ('-' if r.met is None else 'MISSED')}  {r.detail}")
