"""Schema migrations, the event → row mapping, batch writes and database selection."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from engine.events import (
    DecisionMade,
    DecisionRejected,
    FundingPaid,
    JobRun,
    PositionClosed,
    PositionOpened,
)
from engine.settings import Secrets
from engine.store.database import Database, migrate, migrations, prepare_connection
from engine.store.rows import ROW_OF, TABLES, row_from_json, row_to_json, to_row, write_rows
from tests.support.store import (
    count,
    cycle,
    db_settings,
    fetch,
    fill,
    persist,
    run_started,
    snapshot,
)

EXPECTED_TABLES = {
    "runs", "cycles", "decisions", "rejections", "fills", "positions", "funding",
    "account_snapshots", "job_runs", "schema_migrations",
    "llm_cache", "llm_cache_hits",  # 0003: the LLM answer cache (engine/traders/cache.py)
    "quarantine",  # 0004: rows the database refused (engine/store/quarantine.py)
}


def one_of_each() -> list[object]:
    """Return one event of every persisted type."""
    t = 1_767_225_600.0
    return [
        run_started(fresh=True),
        cycle("c1", t + 3),
        DecisionMade(cycle_id="c1", trader="claude", provider="anthropic",
                     model="claude-sonnet-4-5", prompt_hash="h1", raw_answer='{"actions": []}',
                     decision={"actions": []}, valid=True, error=None, input_tokens=1200,
                     output_tokens=80, cache_read_tokens=1000, cache_write_tokens=0,
                     cost_usd=0.0042, latency_ms=1530.5, request_id="req_1", ts=t + 1,
                     model_version="claude-sonnet-4-5-20250929"),
        DecisionRejected(cycle_id="c1", trader="claude", symbol="BTCUSDT", action="open_long",
                         rule="leverage_above_max", detail="leverage 20 > 10", ts=t + 1),
        fill(1),
        PositionOpened(trader="claude", symbol="BTCUSDT", side="long", qty=0.01,
                       entry_price=100_000.0, leverage=5, margin=200.0, stop_loss=98_000.0,
                       take_profit=105_000.0, liquidation_price=80_400.0, reason="breakout",
                       cycle_id="c1", ts=t + 1),
        PositionClosed(trader="claude", symbol="BTCUSDT", side="long", qty=0.01,
                       entry_price=100_000.0, exit_price=98_000.0, realized_pnl=-20.0, fees=1.0,
                       reason="stop_loss", opened_at=t + 1, cycle_id=None, ts=t + 100),
        FundingPaid(trader="claude", symbol="BTCUSDT", rate=0.0001, mark=100_000.0,
                    notional=1000.0, amount=0.1, ts=t + 200),
        snapshot("claude", 9_979.0, t + 300, positions=({"symbol": "BTCUSDT", "qty": 0.01},)),
        JobRun(job="health_check", trigger="schedule", started_at=t, finished_at=t + 0.25,
               status="ok", summary={"healthy": True}),
    ]


async def test_migrations_create_every_table_on_an_empty_database(database_url: str) -> None:
    applied = await migrate(database_url)

    assert applied == [m.name for m in migrations()]
    rows = await fetch(database_url, "SELECT tablename FROM pg_tables WHERE schemaname='public'")
    assert {r["tablename"] for r in rows} == EXPECTED_TABLES
    recorded = await fetch(database_url, "SELECT version, name FROM schema_migrations")
    assert [(r["version"], r["name"]) for r in recorded] == [
        (m.version, m.name) for m in migrations()]
    assert [m.name for m in migrations()][:2] == ["0001_initial", "0002_run_mode_source"]


async def test_migrations_rerun_applies_nothing_and_keeps_data(database_url: str) -> None:
    await migrate(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await prepare_connection(conn)
        await write_rows(conn, {"fills": [to_row(fill(1))[1]]})
    finally:
        await conn.close()

    assert await migrate(database_url) == []
    assert await count(database_url, "fills") == 1
    assert await count(database_url, "schema_migrations") == len(migrations())


async def test_new_migration_files_are_applied_in_version_order(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0002_second.sql").write_text("CREATE TABLE second (id int);")
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first (id int);")
    assert await migrate(database_url, tmp_path) == ["0001_first", "0002_second"]
    (tmp_path / "0003_third.sql").write_text("ALTER TABLE second ADD COLUMN x int;")
    assert await migrate(database_url, tmp_path) == ["0003_third"]


async def test_a_failing_migration_leaves_nothing_half_applied(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_bad.sql").write_text("CREATE TABLE a (id int); CREATE TABLE a (id int);")
    with pytest.raises(asyncpg.DuplicateTableError):
        await migrate(database_url, tmp_path)
    rows = await fetch(database_url, "SELECT count(*) AS n FROM pg_tables WHERE tablename='a'")
    assert rows[0]["n"] == 0
    assert await count(database_url, "schema_migrations") == 0


async def test_indexes_serve_equity_curves_fills_and_decisions_of_a_cycle(
    database_url: str,
) -> None:
    await migrate(database_url)
    rows = await fetch(database_url, "SELECT indexdef FROM pg_indexes WHERE schemaname='public'")
    defs = {r["indexdef"].split(" USING ")[1] for r in rows}
    assert "btree (trader, ts)" in defs  # account_snapshots, fills, ...
    indexed = {r["indexdef"].split(" ON ")[1] for r in rows}
    assert "public.account_snapshots USING btree (trader, ts)" in indexed
    assert "public.fills USING btree (trader, ts)" in indexed
    assert "public.decisions USING btree (cycle_id)" in indexed


async def test_every_persisted_event_lands_in_its_table_once(database_url: str) -> None:
    await migrate(database_url)
    events = one_of_each()
    assert {type(e) for e in events} == set(ROW_OF)
    assert await persist(database_url, *events) == len(events)
    assert await persist(database_url, *events) == 0  # a retried batch inserts nothing

    for table in TABLES:
        expected = sum(1 for e in events if ROW_OF[type(e)][0] == table)
        assert await count(database_url, table) == expected, table
    ids = {r["id"] for t in TABLES for r in await fetch(database_url, f"SELECT id FROM {t}")}
    assert ids == {e.id for e in events}  # type: ignore[attr-defined]
    # 0005: the exact model version the API answered with, beside the model id asked for
    [decision] = await fetch(database_url, "SELECT model, model_version FROM decisions")
    assert (decision["model"], decision["model_version"]) == (
        "claude-sonnet-4-5", "claude-sonnet-4-5-20250929")


async def test_rows_keep_values_exactly(database_url: str) -> None:
    await migrate(database_url)
    snap = snapshot("claude", 10_123.456789012345, 1_767_225_600.25,
                    positions=({"symbol": "ETHUSDT", "qty": 0.1 + 0.2, "stop_loss": None},),
                    state={"peak": 1e-7, "suspended_until": None, "n": 3})
    conn = await asyncpg.connect(database_url)
    try:
        await prepare_connection(conn)
        await write_rows(conn, dict([(t, [r]) for t, r in [to_row(snap)]]))
    finally:
        await conn.close()
    query = "SELECT equity, positions, state, ts FROM account_snapshots"
    row = (await fetch(database_url, query))[0]

    assert row["equity"] == 10_123.456789012345
    assert row["ts"].timestamp() == 1_767_225_600.25
    assert '"qty": 0.30000000000000004' in row["positions"]
    assert '"peak": 1e-7' in row["state"] or '"peak": 0.0000001' in row["state"]


def test_spill_lines_decode_back_to_the_same_row() -> None:
    for event in one_of_each():
        table, row = to_row(event)
        assert row_from_json(row_to_json(table, row)) == (table, row)


def test_a_bad_spill_line_is_refused_with_a_reason() -> None:
    for line in (b'{"t": "fills", "r": [1, 2]}', b'{"t": "nope", "r": []}', b'{"t": "fil'):
        with pytest.raises(ValueError, match="bad spill line"):
            row_from_json(line)


async def test_database_url_is_used_when_set(database_url: str, tmp_path: Path) -> None:
    secrets = Secrets.from_env({"DATABASE_URL": database_url})
    db = await Database.open(db_settings(tmp_path), secrets)
    try:
        assert db.dsn == database_url
        assert not db.embedded
    finally:
        await db.close()
    assert not (tmp_path / "pg").exists()


async def test_embedded_server_starts_in_embedded_dir_and_stops(tmp_path: Path) -> None:
    settings = db_settings(tmp_path, embedded_dir=str(tmp_path / "data" / "pg"))
    db = await Database.open(settings, Secrets.from_env({}))
    try:
        assert db.embedded
        assert (tmp_path / "data" / "pg" / "PG_VERSION").exists()
        assert await migrate(db.dsn) == [m.name for m in migrations()]
    finally:
        await db.close()
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await asyncpg.connect(db.dsn, timeout=2)


def test_ids_are_uuids() -> None:
    assert all(isinstance(to_row(e)[1][0], uuid.UUID) for e in one_of_each())
