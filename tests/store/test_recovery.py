"""Restart recovery: each trader's latest snapshot in the current arena, --fresh, spill replay."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.events import AccountSnapshot
from engine.store.database import migrate
from engine.store.reconcile import RecoveryRefused
from engine.store.recovery import load_state
from engine.store.rows import row_from_json, row_to_json, to_row
from engine.store.spill import SpillFile
from tests.support.store import cycle, file_lines, fill, persist, run_started
from tests.support.store import snapshot as any_snapshot

T0 = 1_767_225_600.0


def snapshot(trader: str, equity: float, ts: float, **kw: Any) -> AccountSnapshot:
    """A snapshot of an account that never traded (what its committed rows imply: nothing)."""
    return dataclasses.replace(any_snapshot(trader, equity, ts, **kw), realized_pnl=0.0,
                               fees=0.0)


def as_dict(snap: AccountSnapshot, series: object = ()) -> dict[str, object]:
    """The snapshot as recovery returns it, with the return series rebuilt from cycle rows."""
    fields = {f: getattr(snap, f) for f in AccountSnapshot.__dataclass_fields__}
    return {**fields, "returns_series": list(series)}


async def test_an_empty_database_has_nothing_to_resume(database_url: str) -> None:
    await migrate(database_url)
    state = await load_state(database_url)
    assert state.empty
    assert (state.runs, state.arena_runs, state.last_cycle_id) == (0, 0, None)


async def test_the_latest_snapshot_of_each_trader_is_returned_with_all_its_fields(
    database_url: str,
) -> None:
    await migrate(database_url)
    position = {"symbol": "BTCUSDT", "side": "long", "qty": 0.01, "entry_price": 100_000.0,
                "leverage": 5, "stop_loss": 98_000.0, "take_profit": None, "reason": "breakout"}
    risk = {"day_start_equity": 10_050.0, "suspended_until": None, "decisions": 12}
    run = run_started(fresh=False)
    older = [snapshot("claude", 10_000.0, T0), snapshot("gpt-4o", 9_900.0, T0 + 60),
             snapshot("claude", 10_050.0, T0 + 300)]
    bought = dataclasses.replace(fill(1, ts=T0 + 599), qty=0.01, fee=0.0)
    latest = snapshot("claude", 10_100.5, T0 + 600, cause="fill", positions=(position,),
                      state=risk)
    await persist(database_url, latest, *older, bought, run)  # any storage order
    state = await load_state(database_url)

    assert set(state.accounts) == {"claude", "gpt-4o"}
    # claude's return series: its two cycle snapshots (10,000 then 10,050) make one return
    assert state.accounts["claude"] == as_dict(latest, [(T0 + 300, 0.005)])
    assert state.accounts["gpt-4o"]["equity"] == 9_900.0


async def test_the_snapshot_made_last_wins_whatever_its_engine_time(
    database_url: str,
) -> None:
    await migrate(database_url)
    run = run_started(fresh=False)
    first = snapshot("claude", 1.0, T0 + 60, cause="fill")
    second = snapshot("claude", 2.0, T0, cause="cycle")  # made later, in an older replayed time
    await persist(database_url, second, first, run)  # stored out of order
    assert (await load_state(database_url)).accounts["claude"]["equity"] == 2.0


async def test_runs_and_the_last_cycle_are_reported(database_url: str) -> None:
    await migrate(database_url)
    await persist(database_url, run_started(fresh=True), run_started(fresh=False),
                  cycle("c-1", T0 + 300), cycle("c-2", T0 + 600))
    state = await load_state(database_url)
    assert (state.runs, state.arena_runs) == (2, 2)
    assert (state.last_cycle_id, state.last_cycle_at) == ("c-2", T0 + 600)


async def test_a_fresh_run_starts_a_new_arena_and_keeps_the_old_history(
    database_url: str,
) -> None:
    await migrate(database_url)
    await persist(database_url, run_started(fresh=False), snapshot("claude", 5_000.0, T0),
                  cycle("old", T0 + 1))
    fresh = run_started(fresh=True)
    await persist(database_url, fresh)
    assert (await load_state(database_url)).empty  # nothing since the fresh start

    await persist(database_url, snapshot("gpt-4o", 10_000.0, T0 + 5))
    state = await load_state(database_url)
    assert set(state.accounts) == {"gpt-4o"}
    assert (state.runs, state.arena_runs, state.arena_run_id) == (2, 1, fresh.run_id)
    assert state.last_cycle_id is None
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM account_snapshots") == 2
    finally:
        await conn.close()


async def test_the_spill_file_is_replayed_before_the_state_is_read(
    database_url: str, tmp_path: Path
) -> None:
    await migrate(database_url)
    await persist(database_url, run_started(fresh=False))
    written = snapshot("claude", 10_000.0, T0)
    await persist(database_url, written)
    spill = SpillFile(tmp_path / "spill.jsonl")
    newest = snapshot("claude", 10_500.0, T0 + 60)
    spill.append([to_row(written), to_row(newest)])

    state = await load_state(database_url, spill_path=str(spill.path))

    assert state.accounts["claude"]["equity"] == 10_500.0
    assert state.replayed_rows == 1  # the other row was already there
    assert file_lines(spill.path) == []
    again = await load_state(database_url, spill_path=str(spill.path))
    assert again.replayed_rows == 0


async def test_arenas_of_different_modes_and_sources_are_kept_apart(database_url: str) -> None:
    await migrate(database_url)
    live = run_started(fresh=True)
    await persist(database_url, live, snapshot("claude", 10_100.0, T0), cycle("live-1", T0))
    replay = run_started(fresh=False, mode="replay", source="a" * 64)
    await persist(database_url, replay, snapshot("claude", 7_000.0, T0 - 86_400),
                  cycle("replay-1", T0 - 86_400))
    other = run_started(fresh=False, mode="replay", source="b" * 64)
    await persist(database_url, other, snapshot("claude", 3_000.0, T0 - 86_400))
    again = run_started(fresh=False)  # the next live start, after both replays
    await persist(database_url, again, snapshot("gpt-4o", 9_000.0, T0 + 60))

    state = await load_state(database_url)
    assert {t: a["equity"] for t, a in state.accounts.items()} == {
        "claude": 10_100.0, "gpt-4o": 9_000.0}
    assert (state.runs, state.arena_runs, state.arena_run_id) == (4, 2, live.run_id)
    assert state.last_cycle_id == "live-1"

    replayed = await load_state(database_url, mode="replay", source="a" * 64)
    assert {t: a["equity"] for t, a in replayed.accounts.items()} == {"claude": 7_000.0}
    assert (replayed.arena_runs, replayed.arena_run_id) == (1, replay.run_id)
    assert replayed.last_cycle_id == "replay-1"
    fresh_file = await load_state(database_url, mode="replay", source="c" * 64)
    assert fresh_file.empty and fresh_file.arena_runs == 0


def test_a_runs_row_spilled_before_migration_0002_is_a_live_run() -> None:
    row = to_row(run_started(fresh=False))[1]
    assert len(row) == 10
    table, old = row_from_json(row_to_json("runs", row[:7]))  # a spill line of the old shape
    assert (table, old[:7], old[7:]) == ("runs", row[:7], ("live", None, None))


def test_a_runs_row_spilled_before_migration_0006_has_no_labels() -> None:
    row = to_row(run_started(fresh=False))[1]
    table, old = row_from_json(row_to_json("runs", row[:9]))
    assert (table, old[:9], old[9:]) == ("runs", row[:9], (None,))


async def test_a_snapshot_its_committed_fills_contradict_stops_recovery_unless_accepted(
    database_url: str,
) -> None:
    """An older database: a take-profit's snapshot was committed, its fill and close were lost."""
    from engine.events import OrderFilled
    from engine.paper.accounts import Position

    await migrate(database_url)
    run = run_started(fresh=False)
    position = Position("BTCUSDT", "long", 0.01, 100_000.0, 5, 200.0, 0.004, 98_000.0, 101_000.0,
                        "breakout", T0, "c1", fees=0.5).to_dict()
    opened = OrderFilled("claude", "BTCUSDT", "buy", 0.01, 100_000.0, 1_000.0, 0.5, 0.0,
                         "decision", "c1", None, T0)
    funded = dataclasses.replace(opened, symbol="ETHUSDT", qty=0.0, fee=0.0)  # a zero-size fill
    holding = dataclasses.replace(
        snapshot("claude", 9_999.5, T0 + 1, cause="fill",
                 positions=({**position, "mark": 100_000.0, "unrealized_pnl": 0.0},),
                 state={"capital": 10_000.0, "trades": 0}),
        cash=9_799.5, margin=200.0, fees=0.5)
    closed = dataclasses.replace(  # the lost take-profit: +10 realized, 0.5 more fees
        snapshot("claude", 10_009.0, T0 + 2, cause="fill", state={"capital": 10_000.0,
                                                                  "trades": 1}),
        cash=10_009.0, realized_pnl=10.0, fees=1.0)
    await persist(database_url, run, opened, funded, holding, closed)

    with pytest.raises(RecoveryRefused) as refused:
        await load_state(database_url)
    assert refused.value.args == (
        "trader claude (live arena): latest account snapshot disagrees with its committed rows "
        "(realized_pnl: snapshot 10.0 vs rows 0.0; fees: snapshot 1.0 vs rows 0.5; positions: "
        "snapshot {} vs rows {'BTCUSDT': 0.01}); start with --fresh for a new arena, or "
        "--accept-reconcile to rebuild the account from the stored rows",)

    state = await load_state(database_url, accept_reconcile=True)

    assert set(state.reconciled) == {"claude"}
    diff = state.reconciled["claude"]
    assert diff["realized_pnl"] == {"snapshot": 10.0, "rows": 0.0}
    assert diff["fees"] == {"snapshot": 1.0, "rows": 0.5}
    assert diff["positions"] == {"snapshot": {}, "rows": {"BTCUSDT": 0.01}}
    acc = state.accounts["claude"]
    assert (acc["realized_pnl"], acc["fees"], acc["funding"]) == (0.0, 0.5, 0.0)
    assert [Position.from_dict(p).to_dict() for p in acc["positions"]] == [position]
    assert acc["margin"] == 200.0 and abs(acc["cash"] - 9_799.5) < 1e-9
    assert abs(acc["cash"] + acc["margin"] - (10_000.0 + 0.0 - 0.5 - 0.0)) < 0.005  # ledger
    assert acc["state"] == {"capital": 10_000.0, "trades": 1}  # counters: the latest snapshot's
    assert acc["cause"] == "reconciled"


async def test_accounts_that_agree_with_their_rows_are_left_alone(database_url: str) -> None:
    await migrate(database_url)
    await persist(database_url, run_started(fresh=False))
    traded = dataclasses.replace(fill(3), side="sell", qty=0.0, fee=0.25, realized_pnl=12.0)
    snap = dataclasses.replace(snapshot("claude", 10_011.75, T0), realized_pnl=12.0, fees=0.25)
    await persist(database_url, traded, snap)
    state = await load_state(database_url)
    assert state.reconciled == {}
    assert state.accounts["claude"] == as_dict(snap)


async def test_the_start_up_spill_replay_logs_its_progress(database_url: str,
                                                            tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    await migrate(database_url)
    spill = SpillFile(tmp_path / "spill.jsonl")
    spill.append([to_row(fill(i)) for i in range(3)])
    with capture_logs() as logs:
        await load_state(database_url, spill_path=str(spill.path))
    progress = [(e["rows"], e["of"]) for e in logs if e["event"] == "spill.replaying"]
    assert progress == [(3, 3)]
    assert [e["event"] for e in logs if e["event"].startswith("spill.replay")] == [
        "spill.replay_started", "spill.replaying", "spill.replayed"]


async def test_the_start_up_spill_replay_gives_up_after_its_bound_in_one_line(
    tmp_path: Path,
) -> None:
    import asyncio

    from engine.store.spill import SpillReplayFailed

    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # a server that accepts and never answers (a black hole)
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spill = SpillFile(tmp_path / "spill.jsonl")
    spill.append([to_row(fill(i)) for i in range(2)])
    try:
        with pytest.raises(SpillReplayFailed) as failed:
            await load_state(f"postgresql://postgres@127.0.0.1:{port}/x",
                             spill_path=str(spill.path), spill_limit_s=0.3)
    finally:
        for writer in accepted:
            writer.transport.abort()
        server.close()
        await server.wait_closed()
    assert str(failed.value).startswith(
        f"replaying the spill file {spill.path} gave up after 0 of 2 rows (TimeoutError")
    assert len(file_lines(spill.path) or []) == 2  # kept for the next start


async def test_a_spilled_row_the_database_refuses_stops_the_start_until_quarantined(
    database_url: str, tmp_path: Path,
) -> None:
    from engine.events import OrderFilled
    from engine.store.quarantine import quarantine
    from engine.store.spill import SpillReplayFailed

    await migrate(database_url)
    bad = OrderFilled(trader="nul\x00byte", symbol="BTCUSDT", side="buy", qty=9.0, price=1.0,
                      notional=9.0, fee=0.0, realized_pnl=0.0, reason="decision", cycle_id=None,
                      ref_price=None, ts=T0)
    spill = SpillFile(tmp_path / "spill.jsonl")
    spill.append([to_row(fill(0)), to_row(bad), to_row(fill(2))])
    with pytest.raises(SpillReplayFailed, match=f"run.py db --quarantine {bad.id}"):
        await load_state(database_url, spill_path=str(spill.path))
    assert await persisted_qtys(database_url) == []  # nothing past it, nothing before it either

    await quarantine(database_url, str(bad.id))
    await load_state(database_url, spill_path=str(spill.path))
    assert await persisted_qtys(database_url) == [0.0, 2.0]
    assert file_lines(spill.path) == []


async def persisted_qtys(dsn: str) -> list[float]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["qty"] for r in await conn.fetch("SELECT qty FROM fills ORDER BY id")]
    finally:
        await conn.close()
