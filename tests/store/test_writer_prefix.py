"""Crash consistency: whatever flush the process dies in, Postgres holds a prefix of the events.

A kill -9 is modelled deterministically: the writer's K-th write dies in the middle of its
transaction (after the COPY of its first table, before the commit), raising a BaseException no
handler of ours catches, and whatever it then spills is thrown away (a killed process writes
nothing more). After each such death the committed rows must be exactly the first M events
published, for some M, so every committed account snapshot has its fills and funding, and (a
flush never ends between a fill and its snapshot) every committed fill has its snapshot.
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.bus import Bus
from engine.clock import SimClock
from engine.events import AccountSnapshot, FundingPaid, OrderFilled, PositionClosed
from engine.store import spill as spill_module
from engine.store import writer as writer_module
from engine.store.rows import TABLES, to_row
from engine.store.spill import SpillFile, replay_spill_file
from engine.store.writer import Writer
from tests.support.store import db_settings, fetch, migrated

T0 = 1_767_225_600.0


class Killed(BaseException):
    """The process died (kill -9): nothing of ours handles it."""


class DyingConnection:
    """A connection whose COPY number `die_at` (1-based) in this write kills the process."""

    def __init__(self, conn: asyncpg.Connection, die_at: int) -> None:
        self._conn = conn
        self._copies = 0
        self._die_at = die_at

    async def copy_records_to_table(self, *args: Any, **kwargs: Any) -> Any:
        self._copies += 1
        if self._copies == self._die_at:
            raise Killed
        return await self._conn.copy_records_to_table(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def dying_writes(real: Any, kill_on: int) -> Any:
    """Wrap `write_batches`: its `kill_on`-th call dies in the middle of its transaction."""
    calls = itertools.count(1)

    async def write(conn: asyncpg.Connection, batches: dict[str, list[Any]],
                    **kwargs: Any) -> int:
        if next(calls) == kill_on:
            # Die after the first table's COPY when there are two tables, else at the first.
            conn = DyingConnection(conn, min(2, len(batches)))
        return await real(conn, batches, **kwargs)

    return write


def trading(n: int, trader: str = "claude") -> list[list[object]]:
    """Return n groups of events as the broker publishes them: fill, close, funding, snapshot.

    Each snapshot's realized PnL, fees and funding are the totals of the events before it.
    """
    groups, realized, fees, funding = [], 0.0, 0.0, 0.0
    for i in range(n):
        ts = T0 + i
        pnl, fee = float(i % 7 - 3), 0.1 * (i % 5 + 1)
        group: list[object] = [OrderFilled(trader, "BTCUSDT", "sell", 0.01, 100_000.0 + i,
                                           1_000.0, fee, pnl, "take_profit", None, None, ts),
                               PositionClosed(trader, "BTCUSDT", "long", 0.01, 100_000.0,
                                              100_000.0 + i, pnl, fee, "take_profit", ts - 1,
                                              None, ts)]
        realized, fees = realized + pnl, fees + fee
        if i % 3 == 0:
            group.append(FundingPaid(trader, "BTCUSDT", 0.0001, 100_000.0, 1_000.0, 0.1, ts))
            funding += 0.1
        group.append(AccountSnapshot(trader, 10_000 + realized - fees - funding, 0.0, 0.0,
                                     10_000 + realized - fees - funding, realized, fees, funding,
                                     10_000.0, 0.0, 0.0, (), {"capital": 10_000.0}, "fill",
                                     None, ts))
        # Timer snapshots of a trader sitting out: account_snapshots fills up faster than fills.
        group += [AccountSnapshot("gpt", 10_000.0, 0.0, 0.0, 10_000.0, 0.0, 0.0, 0.0, 10_000.0,
                                  0.0, 0.0, (), {"capital": 10_000.0}, "timer", None, ts)
                  for _ in range(2)]
        groups.append(group)
    return groups


async def committed_ids(dsn: str) -> set[Any]:
    ids: set[Any] = set()
    for table in TABLES:
        ids |= {r["id"] for r in await fetch(dsn, f"SELECT id FROM {table}")}
    return ids


async def assert_prefix(dsn: str, published: list[object], *, whole_changes: bool = True) -> int:
    """Assert the committed rows are the first M published events; return M."""
    ids = await committed_ids(dsn)
    m = len(ids)
    assert ids == {e.id for e in published[:m]}, "committed rows are not a prefix"  # type: ignore[attr-defined]
    for snap in await fetch(dsn, "SELECT id, trader, realized_pnl, fees, funding "
                                 "FROM account_snapshots"):
        totals = await fetch(
            dsn, "SELECT (SELECT coalesce(sum(realized_pnl), 0) FROM fills t WHERE {0}) AS r,"
                 " (SELECT coalesce(sum(fee), 0) FROM fills t WHERE {0}) AS f,"
                 " (SELECT coalesce(sum(amount), 0) FROM funding t WHERE {0}) AS u".format(
                     "t.id < $1 AND t.trader = $2"), snap["id"], snap["trader"])
        assert abs(totals[0]["r"] - snap["realized_pnl"]) < 1e-9
        assert abs(totals[0]["f"] - snap["fees"]) < 1e-9
        assert abs(totals[0]["u"] - snap["funding"]) < 1e-9
    if not whole_changes:
        return m
    # And no committed fill or funding payment lacks the snapshot that follows it: each trader's
    # latest snapshot holds every committed row (what recovery checks at start).
    latest = await fetch(dsn, "SELECT DISTINCT ON (trader) trader, realized_pnl, fees, funding "
                              "FROM account_snapshots ORDER BY trader, id DESC")
    for snap in latest:
        rows = await fetch(
            dsn, "SELECT (SELECT coalesce(sum(realized_pnl), 0) FROM fills WHERE trader = $1) "
                 "AS r, (SELECT coalesce(sum(amount), 0) FROM funding WHERE trader = $1) AS u",
            snap["trader"])
        assert abs(rows[0]["r"] - snap["realized_pnl"]) < 1e-9
        assert abs(rows[0]["u"] - snap["funding"]) < 1e-9
    if not latest:
        assert await fetch(dsn, "SELECT 1 FROM fills UNION ALL SELECT 1 FROM funding") == []
    return m


async def truncate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    finally:
        await conn.close()


async def run_until_killed(writer: Writer, bus: Bus, clock: SimClock,
                           groups: list[list[object]]) -> None:
    """Publish the groups with time passing between them until the writer dies."""
    import asyncio

    task = asyncio.create_task(writer.run())
    try:
        for i, group in enumerate(groups):
            bus.publish_many(group)
            await clock.settle()
            if i % 4 == 3:
                await clock.advance(0.03)
            if task.done():
                break
        for _ in range(40):
            if task.done():
                break
            await clock.advance(0.05)
        with pytest.raises(BaseExceptionGroup) as died:
            await task
        assert died.group_contains(Killed)
    finally:
        if writer._conn is not None:  # the dead process's socket closes: Postgres rolls back
            writer._conn.terminate()


@pytest.mark.parametrize("kill_on", [1, 2, 3, 5, 8, 13])
async def test_a_kill_between_or_inside_flushes_leaves_a_prefix_of_the_events(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_on: int
) -> None:
    dsn = await migrated(database_url)
    monkeypatch.setattr(writer_module, "write_batches",
                        dying_writes(writer_module.write_batches, kill_on))
    bus, clock = Bus(), SimClock(T0)
    settings = db_settings(tmp_path, batch_rows=9, flush_ms=50)
    writer = Writer(bus, dsn, settings, clock)
    groups = trading(60)
    await run_until_killed(writer, bus, clock, groups)
    with contextlib.suppress(FileNotFoundError):
        (tmp_path / "spill.jsonl").unlink()  # a killed process spills nothing

    published = [e for g in groups for e in g]
    m = await assert_prefix(dsn, published)
    assert writer.flushes == kill_on - 1
    assert 0 < m < len(published) or kill_on == 1
    if kill_on > 1:  # snapshots were committed, each with its fills and funding
        assert await fetch(dsn, "SELECT 1 FROM account_snapshots LIMIT 1")


@pytest.mark.parametrize("kill_on", [1, 2, 4])
async def test_a_kill_during_spill_replay_leaves_a_prefix_too(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_on: int
) -> None:
    dsn = await migrated(database_url)
    published = [e for g in trading(20) for e in g]
    spill = SpillFile(tmp_path / "spill.jsonl")
    spill.append(to_row(e) for e in published)  # an outage's backlog, in publication order
    monkeypatch.setattr(spill_module, "REPLAY_CHUNK_ROWS", 11)
    monkeypatch.setattr(spill_module, "write_batches",
                        dying_writes(spill_module.write_batches, kill_on))

    with pytest.raises(Killed):
        await replay_spill_file(dsn, spill.path)
    # Replay chunks are cut by row count: a prefix, but a fill may precede its snapshot's chunk
    # (recovery then rebuilds that account from the fills).
    m = await assert_prefix(dsn, published, whole_changes=False)
    assert m == 11 * (kill_on - 1)

    monkeypatch.undo()  # the next start replays the rest
    await replay_spill_file(dsn, spill.path)
    assert await assert_prefix(dsn, published) == len(published)
