"""Runs that share a database: every row names its run and arena (migration 0007)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import asyncpg

from engine.events import AccountSnapshot, RunStarted
from engine.report.data import load_run
from engine.store.database import MIGRATIONS_DIR, migrate, prepare_connection
from engine.store.recovery import load_state
from engine.store.rows import RunStamp, write_rows
from tests.support.store import fetch, fill, persist, run_started
from tests.support.store import snapshot as any_snapshot

T0 = 1_767_225_600.0


def snapshot(trader: str, equity: float, ts: float) -> AccountSnapshot:
    """A snapshot of an account that never traded, so recovery's reconcile agrees with it."""
    return dataclasses.replace(any_snapshot(trader, equity, ts), realized_pnl=0.0, fees=0.0)


async def _write(dsn: str, stamp: RunStamp, *events: object) -> None:
    """Write events as one writer does: each row stamped by that writer's own stream."""
    batches: dict[str, list[tuple[object, ...]]] = {}
    for e in events:
        table, row = stamp(e)
        batches.setdefault(table, []).append(row)
    conn = await asyncpg.connect(dsn)
    try:
        await prepare_connection(conn)
        await write_rows(conn, batches)
    finally:
        await conn.close()


async def test_two_runs_writing_at_once_keep_their_own_rows(database_url: str) -> None:
    await migrate(database_url)
    a = run_started(fresh=True, mode="backtest", source="w1")
    b = run_started(fresh=True, mode="backtest", source="w1")  # same window, another variant
    sa, sb = RunStamp(), RunStamp()
    await _write(database_url, sa, a)
    await _write(database_url, sb, b)
    # Interleaved ids: under the old id-span rule every row below would belong to run b.
    for i in range(1, 4):
        await _write(database_url, sa, fill(i, "claude"), snapshot("claude", 10_000.0 + i, T0 + i))
        await _write(database_url, sb, fill(10 + i, "gpt"), snapshot("gpt", 9_000.0 - i, T0 + i))

    conn = await asyncpg.connect(database_url)
    try:
        run_a = await load_run(conn, str(a.run_id))
        run_b = await load_run(conn, str(b.run_id))
    finally:
        await conn.close()
    assert [f["qty"] for f in run_a.fills] == [1.0, 2.0, 3.0]
    assert [f["qty"] for f in run_b.fills] == [11.0, 12.0, 13.0]
    assert {s["trader"] for s in run_a.snapshots} == {"claude"}
    arenas = await fetch(database_url, "SELECT run_id, arena_id FROM runs ORDER BY id")
    assert [(r["run_id"], r["arena_id"]) for r in arenas] == [(a.run_id, a.run_id),
                                                              (b.run_id, b.run_id)]


async def test_a_resumed_run_continues_its_arena_and_recovery_reads_only_it(
    database_url: str,
) -> None:
    await migrate(database_url)
    first = run_started(fresh=True)
    s1 = RunStamp()
    await _write(database_url, s1, first, snapshot("claude", 10_100.0, T0))
    other = run_started(fresh=True, mode="backtest", source="w")  # runs between, elsewhere
    s2 = RunStamp()
    await _write(database_url, s2, other)
    resumed = RunStarted(run_id=run_started(False).run_id, started_at=T0 + 60, version="0.1.0",
                         settings_hash="abc", fresh=False, dry_run=False, arena_id=first.run_id)
    s3 = RunStamp()
    await _write(database_url, s3, resumed)
    live_claude = (await fetch(database_url, "SELECT id FROM account_snapshots"))[0]["id"]
    theirs = snapshot("claude", 5_000.0, T0 + 61)
    await _write(database_url, s2, theirs)  # the backtest's, made after the live run resumed
    gpt = snapshot("gpt", 9_900.0, T0 + 62)
    await _write(database_url, s3, gpt)

    state = await load_state(database_url)

    assert {t: s["id"] for t, s in state.accounts.items()} == {"claude": live_claude,
                                                               "gpt": gpt.id}
    assert (state.arena_runs, state.arena_run_id) == (2, first.run_id)
    backtest = await load_state(database_url, mode="backtest", source="w")
    assert {t: s["id"] for t, s in backtest.accounts.items()} == {"claude": theirs.id}


async def test_migration_0007_converts_an_existing_database(
    database_url: str, tmp_path: Path
) -> None:
    old = tmp_path / "migrations"
    old.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(path.name[:4]) < 7:
            shutil.copy(path, old / path.name)
    await migrate(database_url, old)
    conn = await asyncpg.connect(database_url)
    try:
        await prepare_connection(conn)
        made = []
        for fresh, mode, source, trader in ((True, "live", None, "claude"),
                                            (True, "replay", "f", "gpt"),
                                            (False, "live", None, "deepseek")):
            run = run_started(fresh, mode=mode, source=source)  # ids in the order made
            made.append(run)
            await conn.execute(  # rows of the shape before 0007, written one run after another
                "INSERT INTO runs (id, run_id, started_at, version, settings_hash, fresh, dry_run,"
                " mode, source) VALUES ($1, $2, $3, '0', 'h', $4, false, $5, $6)",
                run.id, run.run_id, T0, run.fresh, run.mode, run.source)
            await persist_old(conn, snapshot(trader, 10_000.0, T0))
    finally:
        await conn.close()
    live, replay, resumed = made

    assert await migrate(database_url) == ["0007_sweeps"]

    rows = await fetch(database_url, "SELECT s.trader, s.run_id, s.arena_id FROM "
                                     "account_snapshots s ORDER BY s.id")
    assert [(r["trader"], r["run_id"], r["arena_id"]) for r in rows] == [
        ("claude", live.run_id, live.run_id), ("gpt", replay.run_id, replay.run_id),
        ("deepseek", resumed.run_id, live.run_id)]
    state = await load_state(database_url)
    assert sorted(state.accounts) == ["claude", "deepseek"]
    await persist(database_url, run_started(True))  # new rows go on being stamped
    assert (await load_state(database_url)).empty


async def persist_old(conn: asyncpg.Connection, event: object) -> None:
    """Insert a row the way a version before 0007 did (no run columns)."""
    _, row = RunStamp()(event)
    await conn.execute(
        "INSERT INTO account_snapshots (id, trader, cash, margin, unrealized_pnl, equity, "
        "realized_pnl, fees, funding, peak_equity, drawdown_pct, return_pct, positions, state, "
        "cause, cycle_id, ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
        " $15, $16, $17)", *row[:-2])
