"""Writer benchmark: rows/s through the Writer over raw COPY of the same rows, and baselines.

Every figure is measured in the same run, on the same database, with the same rows (fills):

* through the writer: events published on the bus, turned into rows, batched and written (one
  queue in publication order, COPY in one transaction per flush), timed from the publish until
  the last row is committed; the writer has connected before the timed window;
* the floor: raw `COPY` of the same rows (already rows) in transactions of exactly the sizes the
  writer committed in that round (read back from Postgres: rows sharing an `xmin` were committed
  by one transaction), each one `COPY` that commits by itself, as the writer writes a flush of
  one table, on a connection opened before the timed window;
* baselines: one autocommit INSERT per row (1-row transactions), and `executemany` in 500-row
  transactions.

Each comparison is run side by side (writer, floor, baselines back to back) after a warm-up; the
figures are medians of the runs, the ratio the median of the per-run ratios. Flush latency: 500
fills published on the bus at once, timed until the writer has committed them (bus → queue → rows →
COPY → commit), p99 of 1,000 flushes (at 300 the p99 was the 3rd-largest and moved by the disk's
occasional slow commit from one side to the other), over the p99 of its floor: the same 500 rows,
already rows, in one COPY (its own transaction) on a connection of its own, alternating with the
flushes (the server's share under the same disk conditions). Before the flushes the heap is
frozen as the engine freezes its own once ready (engine.app.memory.freeze_startup_heap).

Uses TEST_DATABASE_URL when set (a scratch database is created and dropped there), else an
embedded pgserver in a temporary directory, stopped in a `finally` (SIGTERM from `python -m
bench` at the time limit cancels the run so the `finally` runs) and, failing that, at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import statistics
import tempfile
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import uvloop

from bench.common import Result, at_least, at_most, p99, timer
from engine.app.memory import freeze_startup_heap
from engine.bus import Bus
from engine.clock import LiveClock
from engine.events import OrderFilled
from engine.settings import DatabaseSettings
from engine.store.database import migrate, prepare_connection
from engine.store.rows import TABLES, to_row
from engine.store.writer import Writer

RATIO_TARGET = 0.60  # the writer against raw COPY of the same rows in the writer's transactions
FLUSH_OVER_FLOOR_TARGET_MS = 5.0  # the engine's share of a flush's p99, over raw COPY's
TX_ROWS = 500
_COLUMNS = TABLES["fills"].columns


def _fills(n: int, offset: int = 0) -> list[OrderFilled]:
    return [OrderFilled(trader=f"t{i % 5}", symbol="BTCUSDT", side="buy" if i % 2 else "sell",
                        qty=0.001 * (i % 100 + 1), price=100_000.0 + i % 1000, notional=100.0,
                        fee=0.05, realized_pnl=0.0, reason="decision", cycle_id=f"c{i // 1000}",
                        ref_price=100_000.0, ts=1_767_225_600.0 + i * 0.001)
            for i in range(offset, offset + n)]


def _stop_at_exit(started: dict[str, Any]) -> None:
    """Stop the embedded server at interpreter exit if the `finally` never ran (a cancellation
    during its start: the starting thread is joined before atexit hooks run)."""
    server = started.pop("server", None)
    if server is not None:
        with contextlib.suppress(Exception):
            server.cleanup()


def _start_embedded(started: dict[str, Any]) -> Any:
    import pgserver

    tmp = tempfile.mkdtemp(prefix="arena-bench-pg-")
    server = started["server"] = pgserver.get_server(  # type: ignore[attr-defined]
        tmp, cleanup_mode="delete")
    return server


@contextlib.asynccontextmanager
async def _scratch_database() -> AsyncIterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    server = None
    started: dict[str, Any] = {}
    if not url:
        atexit.register(_stop_at_exit, started)
        server = await asyncio.to_thread(_start_embedded, started)
        url = server.get_uri()
    name = f"arena_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(url)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        try:
            yield urlunsplit(urlsplit(url)._replace(path="/" + name))
        finally:
            admin = await asyncpg.connect(url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    finally:
        if started.pop("server", None) is not None and server is not None:
            await asyncio.to_thread(server.cleanup)


async def _connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await prepare_connection(conn)  # the writer's row values (epoch-second timestamps)
    await conn.execute("TRUNCATE fills")
    return conn


async def _through_writer(dsn: str, events: list[OrderFilled], spill_dir: str) -> float:
    """Publish every event and time until the writer has committed them all; return rows/s.
    The fills table then holds the writer's rows (and one connecting row before them)."""
    await (await _connect(dsn)).close()  # fills truncated
    bus = Bus()
    settings = DatabaseSettings(spill_path=os.path.join(spill_dir, "spill.jsonl"))
    writer = Writer(bus, dsn, settings, LiveClock())
    task = asyncio.create_task(writer.run())
    try:
        bus.publish(_fills(1, offset=10_000_000)[0])  # connects (outside the timed window)
        while writer.written < 1:
            await asyncio.sleep(0.001)
        start = timer()
        bus.publish_many(events)
        while writer.written < len(events) + 1:
            await asyncio.sleep(0.0005)
        elapsed = timer() - start
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return len(events) / elapsed


async def _writer_transactions(dsn: str, rows: int) -> list[int]:
    """Return the sizes of the transactions that committed the writer's last `rows` rows, in
    commit order (rows committed together share their `xmin`)."""
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetch("SELECT xmin::text::bigint AS tx, count(*) AS n FROM fills "
                                 "GROUP BY tx ORDER BY tx")
    finally:
        await conn.close()
    sizes = [int(r["n"]) for r in found]
    while sum(sizes) > rows:  # the connecting row's own transaction
        sizes.pop(0)
    if sum(sizes) != rows:
        raise RuntimeError(f"the writer's transactions hold {sum(sizes)} rows, not {rows}")
    return sizes


async def _raw_copy(dsn: str, rows: list[tuple[Any, ...]], sizes: list[int]) -> float:
    """COPY the rows straight into fills in transactions of `sizes` rows; return rows/s."""
    conn = await _connect(dsn)
    try:
        start = timer()
        i = 0
        for size in sizes:
            # one table: a COPY is its own transaction, as the writer writes a one-table flush
            await conn.copy_records_to_table("fills", records=rows[i:i + size], columns=_COLUMNS)
            i += size
        return len(rows) / (timer() - start)
    finally:
        await conn.close()


def _insert_sql() -> str:
    return (f"INSERT INTO fills ({', '.join(_COLUMNS)}) VALUES "
            f"({', '.join(f'${i + 1}' for i in range(len(_COLUMNS)))})")


async def _per_row_inserts(dsn: str, rows: list[tuple[Any, ...]]) -> float:
    """One prepared INSERT per row, autocommit (a transaction per row); return rows/s."""
    conn = await _connect(dsn)
    try:
        stmt = await conn.prepare(_insert_sql())
        start = timer()
        for row in rows:
            await stmt.fetch(*row)
        return len(rows) / (timer() - start)
    finally:
        await conn.close()


async def _executemany(dsn: str, rows: list[tuple[Any, ...]]) -> float:
    """`executemany` of the INSERT, 500 rows per transaction; return rows/s."""
    conn = await _connect(dsn)
    try:
        sql = _insert_sql()
        start = timer()
        for i in range(0, len(rows), TX_ROWS):
            async with conn.transaction():
                await conn.executemany(sql, rows[i:i + TX_ROWS])
        return len(rows) / (timer() - start)
    finally:
        await conn.close()


async def _committed(writer: Writer, count: int) -> None:
    """Return once the writer has committed `count` rows in all (polls every loop turn, so the
    figure is not rounded up to a timer's millisecond)."""
    while writer.written < count:
        await asyncio.sleep(0)


async def _flush_latencies(dsn: str, batches: int,
                           spill_dir: str) -> tuple[list[float], list[float]]:
    """Time `batches` flushes through the whole writer: 500 fills published on the bus at once,
    until the writer has committed them (bus → queue → rows → COPY → one commit).

    Alternating with each flush, the floor: the same 500 rows (already rows) in one COPY, its own
    transaction as the writer's one-table flush is, on a connection of its own, opened before: the
    server's share of the same work under the same disk conditions, which the writer cannot beat.
    """
    await (await _connect(dsn)).close()  # fills truncated
    conn = await _connect(dsn)
    bus = Bus()
    settings = DatabaseSettings(batch_rows=TX_ROWS,
                                spill_path=os.path.join(spill_dir, "spill-flush.jsonl"))
    writer = Writer(bus, dsn, settings, LiveClock())
    task = asyncio.create_task(writer.run())
    try:
        bus.publish(_fills(1, offset=20_000_000)[0])  # connects (outside the timed windows)
        await _committed(writer, 1)
        freeze_startup_heap()  # as the engine does once it is ready (engine.app.memory)
        flushes, floor = [], []
        for b in range(batches + 5):
            events = _fills(TX_ROWS, offset=b * TX_ROWS)
            same = [to_row(e)[1] for e in _fills(TX_ROWS, offset=40_000_000 + b * TX_ROWS)]
            done = writer.written + TX_ROWS
            start = timer()
            bus.publish_many(events)
            await _committed(writer, done)
            middle = timer()
            await conn.copy_records_to_table("fills", records=same, columns=_COLUMNS)
            flushes.append((middle - start) * 1000)
            floor.append((timer() - middle) * 1000)
        if writer.flushes != batches + 6:  # each timed batch must be one flush, one commit
            raise RuntimeError(f"{batches + 5} batches took {writer.flushes - 1} flushes")
        return flushes[5:], floor[5:]  # warm-up
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await conn.close()


async def _measure(quick: bool, tiny: bool = False) -> list[Result]:
    runs = 1 if tiny else 3  # after a warm-up round; each INSERT-per-row commit waits for the WAL
    n = 2_000 if tiny else 20_000 if quick else 100_000
    n_exec = 200 if tiny else 2_000 if quick else 10_000
    n_row = 20 if tiny else 200 if quick else 1_000
    events = _fills(n)
    rows = [to_row(e)[1] for e in events]
    per: dict[str, list[float]] = {"writer": [], "copy": [], "insert": [], "executemany": []}
    tx_sizes: list[list[int]] = []
    async with _scratch_database() as dsn:
        await migrate(dsn)
        with tempfile.TemporaryDirectory(prefix="arena-bench-spill-") as spill_dir:
            for i in range(runs + 1):  # side by side; the first round is the warm-up
                writer_rate = await _through_writer(dsn, events, spill_dir)
                sizes = await _writer_transactions(dsn, n)
                figures = {
                    "writer": writer_rate,
                    "copy": await _raw_copy(dsn, rows, sizes),
                    "insert": await _per_row_inserts(dsn, rows[:n_row]),
                    "executemany": await _executemany(dsn, rows[:n_exec]),
                }
                if i:
                    tx_sizes.append(sizes)
                    for k, v in figures.items():
                        per[k].append(v)
            flush_ms, floor_ms = await _flush_latencies(dsn, 10 if tiny else 200 if quick else 1000,
                                                        spill_dir)
    med = {k: statistics.median(v) for k, v in per.items()}
    ratios = [w / c for w, c in zip(per["writer"], per["copy"], strict=True)]
    ratio = statistics.median(ratios)
    p99_ms = p99(flush_ms)
    over_ms = p99_ms - p99(floor_ms)
    of = f"median of {runs} runs"
    shapes = "; ".join(f"{len(t)} transactions of median {statistics.median(t):g} rows "
                       f"(max {max(t)})" for t in tx_sizes)
    return [
        Result("writer.vs_raw_copy", round(ratio, 3), "x", f">= {RATIO_TARGET}",
               at_least(ratio, RATIO_TARGET),
               f"rows/s through the Writer over raw COPY of the same {n} rows in the writer's own "
               f"transactions, same run; {of} per-run ratios "
               f"({', '.join(f'{r:.2f}' for r in ratios)}); the writer's transactions: {shapes}",
               workload=min(sum(t) for t in tx_sizes)),
        Result("writer.rows_per_s", round(med["writer"]), "rows/s", "", None,
               f"{n} fills published at once through Writer (batch_rows 500, up to 8,000-row "
               f"transactions when behind; connected before timing), {of}", workload=n),
        Result("writer.raw_copy_rows_per_s", round(med["copy"]), "rows/s", "", None,
               f"floor: {n} rows, copy_records_to_table, in the writer's transactions, {of}",
               workload=n),
        Result("writer.executemany_rows_per_s", round(med["executemany"]), "rows/s", "", None,
               f"baseline: {n_exec} rows, executemany INSERT, {TX_ROWS}-row transactions, {of}",
               workload=n_exec),
        Result("writer.insert_per_row_rows_per_s", round(med["insert"]), "rows/s", "", None,
               f"baseline: {n_row} rows, one prepared INSERT per row, autocommit (1-row "
               f"transactions), {of}", workload=n_row),
        Result("writer.flush_500_p99_over_floor_ms", round(over_ms, 2), "ms",
               f"<= {FLUSH_OVER_FLOOR_TARGET_MS:g}", at_most(over_ms, FLUSH_OVER_FLOOR_TARGET_MS),
               f"p99 of {len(flush_ms)} flushes through the whole writer ({TX_ROWS} fills "
               f"published on the bus at once, each timed until the Writer has committed it: bus, "
               f"queue, rows, COPY, commit) minus the p99 of the floor: the same {TX_ROWS} rows, "
               f"already rows, in one COPY (its own transaction) on a connection of its own, "
               f"alternating with the flushes; medians {statistics.median(flush_ms):.2f} and "
               f"{statistics.median(floor_ms):.2f} ms",
               workload=len(flush_ms) * TX_ROWS),
        Result("writer.flush_500_p99_ms", round(p99_ms, 2), "ms", "", None,
               "absolute (depends on the disk): the p99 behind writer.flush_500_p99_over_floor_ms",
               workload=len(flush_ms) * TX_ROWS),
        Result("writer.copy_500_floor_p99_ms", round(p99(floor_ms), 2), "ms", "", None,
               f"the floor's p99: raw COPY of {TX_ROWS} rows in one transaction (the server's "
               f"share, WAL flush included)", workload=len(floor_ms) * TX_ROWS),
    ]


async def _main(quick: bool, tiny: bool) -> list[Result]:
    """Measure; SIGTERM (the time limit) cancels it, so the embedded server is stopped."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    return await _measure(quick, tiny)


def run(quick: bool = False, tiny: bool = False) -> list[Result]:
    """Run the writer benchmark and return its figures (`tiny`: a smoke pass of its workload)."""
    return uvloop.run(_main(quick, tiny))


if __name__ == "__main__":
    for r in run(quick=bool(os.environ.get("QUICK"))):
        print(f"{r.name:36s} {r.value:>12} {r.unit:7s} target {r.target or '-':8s} "
              f"{'ok' if r.met else ('-' if r.met is None else 'MISSED')}  {r.detail}")
