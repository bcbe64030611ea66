"""The account snapshots of the timer and the cycle: each account valued once, the same rows
as `snapshot()` gives trader by trader."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from engine.bus import Bus
from engine.clock import SimClock
from engine.events import AccountSnapshot
from tests.paper.test_broker import World, long, short


def test_published_snapshots_equal_each_traders_snapshot_and_its_parts(clock: SimClock,
                                                                      bus: Bus) -> None:
    w = World(clock, bus)
    w.broker.open_account("b", 5_000.0)
    w.do(long("BTCUSDT", 3_000), short("ETHUSDT", 1_500, lev=2))
    w.do(long("ETHUSDT", 1_000, lev=3), trader="b")
    w.book.set("BTCUSDT", 60_600.0, 60_610.0)
    w.book.set("ETHUSDT", 2_950.0, 2_951.0)
    w.broker.mark_all()
    w.clock.set_time(w.clock.time() + 300)
    w.events()
    w.broker.publish_snapshots("cycle", "c2")
    rows = w.events(AccountSnapshot)
    assert [r.trader for r in rows] == ["a", "b"]
    for row in rows:
        again = w.broker.snapshot(row.trader, "cycle", "c2")
        assert {**asdict(row), "id": None} == {**asdict(again), "id": None}
        acc = w.broker.accounts[row.trader]
        marks = w.broker.marks.for_account(acc)
        assert row.unrealized_pnl == acc.unrealized(marks)
        assert row.equity == acc.equity(marks) == row.cash + row.margin + row.unrealized_pnl
        assert row.margin == acc.margin() and row.ts == w.clock.time()
        assert [p["symbol"] for p in row.positions] == list(acc.positions)
        for p in row.positions:
            assert list(p)[-2:] == ["mark", "unrealized_pnl"]
            assert p["mark"] == marks[p["symbol"]]
            assert p["unrealized_pnl"] == acc.positions[p["symbol"]].unrealized(p["mark"])
        assert acc.state.returns.last_equity == row.equity  # the cycle's return: that equity
    assert rows[0].unrealized_pnl != 0.0 and len(rows[0].positions) == 2


def test_a_limit_tripped_by_the_timer_publishes_the_risk_snapshot_first(clock: SimClock,
                                                                       bus: Bus) -> None:
    w = World(clock, bus)
    w.do(long("BTCUSDT", 9_000, lev=2))  # 0.15 BTC
    w.book.set("BTCUSDT", 52_000.0, 52_000.0)  # 0.15 x -8,000 = -1,200: past the 10 % a day
    w.broker.marks.clear()
    w.events()
    w.broker.publish_snapshots("timer", None)
    rows = w.events(AccountSnapshot)
    assert [r.cause for r in rows] == ["risk", "timer"]
    assert rows[0].equity == rows[1].equity == pytest.approx(10_000 - 1_200, abs=20)
    assert rows[1].state["suspended_until"] is not None


def test_a_snapshots_recent_fills_stay_those_of_its_instant(clock: SimClock, bus: Bus) -> None:
    """The state's recent fills are a list of their own (the kept fill dicts, never changed,
    are shared): fills after the snapshot, rolling the 20 kept, leave it as it was."""
    import copy

    w = World(clock, bus)
    for _ in range(3):
        w.do(long("BTCUSDT", 1_000))
    before = w.broker.snapshot("a", "timer", None)
    kept = copy.deepcopy(before.state["recent_fills"])
    assert len(kept) == 3 and kept == w.broker.accounts["a"].state.recent_fills
    for _ in range(25):
        w.do(long("ETHUSDT", 1_000))
    assert before.state["recent_fills"] == kept
    after = w.broker.snapshot("a", "timer", None)
    assert len(after.state["recent_fills"]) == 20
    assert after.state["recent_fills"] == w.broker.accounts["a"].state.recent_fills
    assert after.state["recent_fills"] is not w.broker.accounts["a"].state.recent_fills
