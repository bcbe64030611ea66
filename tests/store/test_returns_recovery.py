"""The kept return series is rebuilt at restart from the persisted cycle snapshots, not stored.

Real parts: the broker publishes, the engine's writer persists into real Postgres, recovery
(load_state) reads the arena back and PaperBroker.restore resumes; the leaderboard's statistics
after the restart must equal those before it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
import pytest

from engine.bus import Bus
from engine.clock import SimClock
from engine.decision import Action
from engine.events import AccountSnapshot, RunStarted, new_id
from engine.paper.broker import PaperBroker
from engine.settings import DatabaseSettings, LeaderboardSettings
from engine.store.database import migrate
from engine.store.recovery import load_state
from engine.store.writer import Writer
from tests.support.broker import FakeBook, broker_settings, risk_settings
from tests.support.store import persist, run_started

TRADERS = ("claude", "deepseek", "gpt")
BOARD = LeaderboardSettings(min_returns=20, bootstrap_samples=400, returns_kept=50)
STAT_FIELDS = ("sharpe", "sortino", "returns_n", "return_ci", "sharpe_ci", "deflated_sharpe")


class Arena:
    """One engine run: a broker whose every event goes through the real writer."""

    def __init__(self, dsn: str, clock: SimClock, book: FakeBook, spill: Path) -> None:
        self.bus = Bus()
        self.writer = Writer(self.bus, dsn, DatabaseSettings(spill_path=str(spill)), clock)
        self.task = asyncio.create_task(self.writer.run())
        self.clock = clock
        self.broker = new_broker(self.bus, clock, book)

    def start(self, *, fresh: bool) -> None:
        self.bus.publish(RunStarted(run_id=new_id(), started_at=self.clock.time(),
                                    version="test", settings_hash="test", fresh=fresh,
                                    dry_run=False))

    async def stop(self) -> None:
        await self.clock.settle()
        self.task.cancel()  # the writer's final flush
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def run_cycles(arena: Arena, book: FakeBook, rng: np.random.Generator, n: int) -> None:
    """Move prices and run `n` cycles: snapshots every minute, a cycle snapshot every five."""
    broker, clock = arena.broker, arena.clock
    for i in range(n):
        for _ in range(4):
            clock.set_time(clock.time() + 60)
            broker.publish_snapshots("timer", None)
        clock.set_time(clock.time() + 60)
        btc = book.quote("BTCUSDT").mark * (1 + rng.normal(0, 0.004))  # type: ignore[union-attr]
        eth = book.quote("ETHUSDT").mark * (1 + rng.normal(0, 0.006))  # type: ignore[union-attr]
        book.set("BTCUSDT", round(btc, 1), t=clock.time())
        book.set("ETHUSDT", round(eth, 2), t=clock.time())
        broker.mark_all()
        broker.publish_snapshots("cycle", f"c{i}")
        if i % 17 == 3:  # a second cycle snapshot at the same instant: not a new period
            book.set("BTCUSDT", round(btc * 1.01, 1), t=clock.time())
            broker.mark_all()
            broker.publish_snapshots("cycle", f"c{i}-again")
    await broker.refresh_board_stats()


def board_view(broker: PaperBroker) -> dict[str, Any]:
    board = broker.leaderboard("c", publish=False)
    return {"rows": {r["trader"]: {f: r[f] for f in STAT_FIELDS} for r in board.rows},
            "pairwise": list(board.pairwise)}


def new_broker(bus: Bus, clock: SimClock, book: FakeBook) -> PaperBroker:
    return PaperBroker(broker_settings(), risk_settings(), bus, clock, book,
                       symbols=["BTCUSDT", "ETHUSDT"], board=BOARD)


async def restart(dsn: str, clock: SimClock, book: FakeBook, bus: Bus | None = None
                  ) -> PaperBroker:
    """Resume every trader the way the engine does: load_state, then restore."""
    state = await load_state(dsn, returns_kept=BOARD.returns_kept)
    broker = new_broker(bus or Bus(), clock, book)
    for trader in TRADERS:
        assert "recent" not in state.accounts[trader]["state"]["returns"]
        broker.restore(trader, state.accounts[trader])
    await broker.refresh_board_stats()
    return broker


async def test_the_leaderboard_after_a_restart_equals_the_one_before(
        database_url: str, clock: SimClock, tmp_path: Path) -> None:
    await migrate(database_url)
    rng = np.random.default_rng(7)
    book = FakeBook()
    book.set("BTCUSDT", 60_000.0)
    book.set("ETHUSDT", 3_000.0)
    # An earlier arena whose cycles must not leak into the current one's series
    old = Arena(database_url, clock, book, tmp_path / "spill0.jsonl")
    old.start(fresh=True)
    for t in TRADERS:
        old.broker.open_account(t, 5_000.0)
    await run_cycles(old, book, rng, 30)
    await old.stop()

    first = Arena(database_url, clock, book, tmp_path / "spill1.jsonl")
    first.start(fresh=True)
    for t in TRADERS:
        first.broker.open_account(t, 10_000.0)
    first.broker.execute("claude", [Action(symbol="BTCUSDT", action="open_long",
                                           size_usdt=4_000.0, leverage=5)], "c0", None)
    first.broker.execute("gpt", [Action(symbol="ETHUSDT", action="open_short",
                                        size_usdt=3_000.0, leverage=3)], "c0", None)
    await run_cycles(first, book, rng, 40)
    await first.stop()

    # A restart in the middle of the arena: the series goes on across the two runs
    second = Arena(database_url, clock, book, tmp_path / "spill2.jsonl")
    second.start(fresh=False)
    second.broker = await restart(database_url, clock, book, second.bus)
    second.broker.execute("deepseek", [Action(symbol="ETHUSDT", action="open_long",
                                              size_usdt=2_000.0, leverage=2)], "d0", None)
    await run_cycles(second, book, rng, 45)
    before = board_view(second.broker)
    await second.stop()

    after = await restart(database_url, clock, book)
    assert board_view(after) == before
    for t in TRADERS:
        kept = second.broker.accounts[t].state.returns
        assert after.accounts[t].state.returns == kept
        # 85 cycle instants (six of them snapshotted twice, at another equity): 84 returns
        assert len(kept.recent) == BOARD.returns_kept and kept.n == 84
    assert all(r["sharpe"] is not None and r["sharpe_ci"] is not None
               for r in before["rows"].values())
    assert all(p["p_a_beats_b"] is not None and p["n"] == BOARD.returns_kept
               for p in before["pairwise"])
    # Asked for more than the arena holds: every return since the fresh start, none before it
    whole = await load_state(database_url, returns_kept=1_000)
    assert {t: len(a["returns_series"]) for t, a in whole.accounts.items()} == dict.fromkeys(
        TRADERS, 84)
    assert whole.accounts["gpt"]["returns_series"][-50:] == list(
        second.broker.accounts["gpt"].state.returns.recent)


async def test_a_snapshot_stored_with_its_series_by_an_older_version_still_restores(
        database_url: str, clock: SimClock) -> None:
    await migrate(database_url)
    run = run_started(fresh=True, started_at=clock.time() - 1)  # its id sorts first
    returns = {"n": 3, "mean": 0.001, "m2": 0.0001, "down2": 0.00002, "last_equity": 10_000.0,
               "last_ts": clock.time(), "dt_sum": 900.0, "window": 2016,
               "recent": {"t": [clock.time() - 600, 300.0, 300.0], "r": [0.002, -0.004, 0.005]}}
    snap = AccountSnapshot(
        trader="claude", cash=10_000.0, margin=0.0, unrealized_pnl=0.0, equity=10_000.0,
        realized_pnl=0.0, fees=0.0, funding=0.0, peak_equity=10_000.0, drawdown_pct=0.0,
        return_pct=0.0, positions=(), state={"capital": 10_000.0, "sod_equity": 10_000.0,
                                             "sod_day": 20_454, "peak_equity": 10_000.0,
                                             "returns": returns},
        cause="cycle", cycle_id="c3", ts=clock.time())
    await persist(database_url, run, snap)
    state = await load_state(database_url)
    assert state.accounts["claude"]["returns_series"] is None  # the stored one is used
    broker = new_broker(Bus(), clock, FakeBook())
    broker.restore("claude", state.accounts["claude"])
    t = clock.time()
    assert list(broker.accounts["claude"].state.returns.recent) == [
        (t - 600, 0.002), (t - 300, -0.004), (t, 0.005)]


async def test_snapshot_rows_do_not_grow_with_the_cycles(database_url: str, clock: SimClock,
                                                        tmp_path: Path) -> None:
    await migrate(database_url)
    book = FakeBook()
    book.set("BTCUSDT", 60_000.0)
    book.set("ETHUSDT", 3_000.0)
    arena = Arena(database_url, clock, book, tmp_path / "spill.jsonl")
    arena.start(fresh=True)
    arena.broker.open_account("claude", 10_000.0)
    arena.broker.execute("claude", [Action(symbol="BTCUSDT", action="open_long",
                                           size_usdt=4_000.0, leverage=5)], "c0", None)
    await run_cycles(arena, book, np.random.default_rng(3), 500)
    await arena.stop()
    conn = await asyncpg.connect(database_url)
    try:
        latest = await conn.fetch(
            "SELECT DISTINCT ON (cause) cause, state::text AS state FROM account_snapshots "
            "WHERE cause IN ('cycle', 'timer') ORDER BY cause, id DESC")
    finally:
        await conn.close()
    states = {r["cause"]: r["state"] for r in latest}
    assert {c: orjson.loads(s)["returns"]["n"] for c, s in states.items()} == {
        "cycle": 499, "timer": 498}  # 500 cycles: the last timer row came before the last one
    assert all(len(s) < 4096 for s in states.values())  # ~11.6 KB with the series inside


def awkward_times(start: float, n: int) -> list[float]:
    """Times about five minutes apart whose float and stored microseconds round to different
    milliseconds (a live clock reads such a time about once in 2,000 cycles)."""
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    out, ts = [], start
    while len(out) < n:
        ts += 0.000_123_457
        stored = (epoch + timedelta(microseconds=round((ts - 946_684_800) * 1e6))).timestamp()
        if round(ts, 3) != round(stored, 3):
            out.append(ts)
            ts += 300.0
    return out


async def test_series_times_are_the_same_after_a_restart_at_any_clock_reading(
        database_url: str, tmp_path: Path) -> None:
    await migrate(database_url)
    times = awkward_times(1_767_225_600.0, 30)
    clock = SimClock(times[0] - 1)
    book = FakeBook()
    book.set("BTCUSDT", 60_000.0)
    book.set("ETHUSDT", 3_000.0)
    arena = Arena(database_url, clock, book, tmp_path / "spill.jsonl")
    arena.start(fresh=True)
    for t in TRADERS:
        arena.broker.open_account(t, 10_000.0)
    arena.broker.execute("claude", [Action(symbol="BTCUSDT", action="open_long",
                                           size_usdt=4_000.0, leverage=5)], "c0", None)
    for i, ts in enumerate(times):
        clock.set_time(ts)
        book.set("BTCUSDT", 60_000.0 + 37.5 * (i % 7), t=ts)
        arena.broker.mark_all()
        arena.broker.publish_snapshots("cycle", f"c{i}")
    await arena.broker.refresh_board_stats()
    before = board_view(arena.broker)
    await arena.stop()

    after = await restart(database_url, clock, book)
    assert after.accounts["claude"].state.returns == arena.broker.accounts["claude"].state.returns
    assert board_view(after) == before
