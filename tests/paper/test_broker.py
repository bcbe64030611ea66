"""The paper broker: fills, positions, triggers on every tick, funding, events, restore."""

from __future__ import annotations

import pytest

from engine.bus import Bus
from engine.clock import SimClock
from engine.decision import Action, Decision
from engine.events import (
    AccountSnapshot,
    DecisionRejected,
    FundingPaid,
    Leaderboard,
    OrderFilled,
    PositionClosed,
    PositionOpened,
)
from engine.paper.broker import PaperBroker
from engine.settings import LeaderboardSettings
from tests.support.broker import (
    T0,
    FakeBook,
    book_ticker,
    broker_settings,
    mark_price,
    risk_settings,
    snapshot_of,
)

BROKER_EVENTS = (OrderFilled, PositionOpened, PositionClosed, FundingPaid, DecisionRejected,
                 AccountSnapshot, Leaderboard)


class World:
    def __init__(self, clock: SimClock, bus: Bus, **broker_kw: float) -> None:
        self.clock, self.bus, self.book = clock, bus, FakeBook()
        self.sub = bus.subscribe("test", BROKER_EVENTS, capacity=100_000)
        self.book.set("BTCUSDT", 60_000.0, 60_000.0)
        self.book.set("ETHUSDT", 3_000.0, 3_000.0)
        self.broker = PaperBroker(broker_settings(**broker_kw), risk_settings(), bus, clock,
                                  self.book, snapshot_interval=60.0,
                                  symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"])
        self.broker.open_account("a", 10_000.0)

    def do(self, *actions: Action, trader: str = "a") -> list[object]:
        return self.broker.execute(trader, list(actions), "c1", snapshot_of(self.book))

    def events(self, kind: type | None = None) -> list[object]:
        got = self.sub.drain()
        return [e for e in got if kind is None or isinstance(e, kind)]


@pytest.fixture
def w(clock: SimClock, bus: Bus) -> World:
    return World(clock, bus)


def long(symbol: str, size: float, lev: int = 5, **kw: float) -> Action:
    return Action(symbol=symbol, action="open_long", size_usdt=size, leverage=lev, **kw)


def short(symbol: str, size: float, lev: int = 5, **kw: float) -> Action:
    return Action(symbol=symbol, action="open_short", size_usdt=size, leverage=lev, **kw)


def test_buys_fill_at_the_ask_plus_slippage_rounded_to_step_and_tick(clock, bus) -> None:
    w = World(clock, bus, slippage_bps=1.0)
    w.book.set("BTCUSDT", 59_999.9, 60_000.0)
    (fill,) = [e for e in w.do(long("BTCUSDT", 1_000)) if isinstance(e, OrderFilled)]
    # ask 60,000 * (1 + 1 bp) = 60,006.0 (on the 0.1 tick); qty = 1,000 / 60,006 = 0.01666
    # rounded down to the 0.001 step = 0.016; notional 960.096; fee * 0.0005 = 0.480048
    assert (fill.side, fill.price, fill.qty) == ("buy", 60_006.0, 0.016)
    assert fill.notional == pytest.approx(960.096)
    assert fill.fee == pytest.approx(0.480048)


def test_sells_fill_at_the_bid_minus_slippage(clock, bus) -> None:
    w = World(clock, bus, slippage_bps=1.0)
    w.book.set("ETHUSDT", 3_000.0, 3_000.5)
    (fill,) = [e for e in w.do(short("ETHUSDT", 600)) if isinstance(e, OrderFilled)]
    # bid 3,000 * (1 - 1 bp) = 2,999.70; qty = floor(600 / 2,999.7, 0.001) = 0.2
    assert (fill.side, fill.price, fill.qty) == ("sell", 2_999.70, 0.2)


def test_opening_publishes_fill_position_and_snapshot_in_order(w: World) -> None:
    w.do(long("BTCUSDT", 3_000, lev=10, stop_loss=57_000.0, reason="breakout"))
    kinds = [type(e).__name__ for e in w.events()]
    assert kinds == ["OrderFilled", "PositionOpened", "AccountSnapshot"]
    pos = w.broker.positions_view("a")[0]
    assert (pos["side"], pos["qty"], pos["leverage"], pos["stop_loss"], pos["open_reason"]) == (
        "long", 0.05, 10, 57_000.0, "breakout")


def test_below_min_notional_at_fill_time_is_refused_and_published(w: World) -> None:
    events = w.do(long("BTCUSDT", 90))  # BTCUSDT minimum is 100 USDT
    assert [(type(e).__name__, getattr(e, "rule", None)) for e in events] == [
        ("DecisionRejected", "min_notional")]
    assert w.events(DecisionRejected)[0].rule == "min_notional"
    assert w.broker.accounts["a"].positions == {}


def test_close_with_size_reduces_and_without_size_closes(w: World) -> None:
    w.do(short("ETHUSDT", 3_000))  # 1 ETH at 3,000
    w.book.set("ETHUSDT", 2_900.0, 2_900.0)
    w.do(Action(symbol="ETHUSDT", action="close", size_usdt=1_450))  # 0.5 ETH
    pos = w.broker.accounts["a"].positions["ETHUSDT"]
    assert pos.qty == pytest.approx(0.5)
    w.do(Action(symbol="ETHUSDT", action="close"))
    closed = w.events(PositionClosed)
    # realized over the whole life: 0.5 * 100 + 0.5 * 100 = 100
    assert [(c.reason, c.qty) for c in closed] == [("decision", 0.5)]
    assert closed[0].realized_pnl == pytest.approx(100.0)
    assert w.broker.accounts["a"].positions == {}


def test_opposite_open_flips_the_position(w: World) -> None:
    w.do(short("ETHUSDT", 1_500))
    w.events()
    w.do(long("ETHUSDT", 3_000))
    events = w.events()
    assert [type(e).__name__ for e in events] == [
        "OrderFilled", "PositionClosed", "OrderFilled", "PositionOpened", "AccountSnapshot"]
    assert events[1].reason == "flip" and events[0].reason == "flip"
    assert w.broker.accounts["a"].positions["ETHUSDT"].side == "long"


def test_hold_with_stops_moves_them_without_a_fill(w: World) -> None:
    w.do(long("ETHUSDT", 1_500))
    w.events()
    w.do(Action(symbol="ETHUSDT", action="hold", stop_loss=2_800.0, take_profit=3_500.0))
    assert [type(e).__name__ for e in w.events()] == ["AccountSnapshot"]
    pos = w.broker.accounts["a"].positions["ETHUSDT"]
    assert (pos.stop_loss, pos.take_profit) == (2_800.0, 3_500.0)


def test_long_stop_loss_triggers_on_the_bid_and_fills_there_with_slippage(clock, bus) -> None:
    w = World(clock, bus, slippage_bps=1.0)
    w.do(long("BTCUSDT", 3_000, stop_loss=58_000.0))
    w.events()
    w.broker.on_market(book_ticker("BTCUSDT", 58_000.5, 58_001.0))  # bid still above the stop
    assert w.events() == []
    w.broker.on_market(book_ticker("BTCUSDT", 57_990.0, 57_990.1))
    fill, closed, snap = w.events()
    # 57,990 * (1 - 1 bp) = 57,984.201 → down to the 0.1 tick: 57,984.2
    assert (fill.reason, fill.side, fill.price) == ("stop_loss", "sell", 57_984.2)
    assert closed.reason == "stop_loss" and snap.cause == "fill"
    assert w.broker.accounts["a"].positions == {}


def test_short_take_profit_triggers_on_the_ask_and_fills_at_its_level(w: World) -> None:
    w.do(short("ETHUSDT", 3_000, take_profit=2_700.0))
    w.events()
    w.broker.on_market(book_ticker("ETHUSDT", 2_699.0, 2_700.5))  # bid crossed, ask not yet
    assert w.events() == []
    w.broker.on_market(book_ticker("ETHUSDT", 2_699.0, 2_699.5))
    fill, closed, _ = w.events()
    # the ask went 0.5 beyond the level; a take-profit fills at its level, never better
    assert (fill.reason, fill.side, fill.price) == ("take_profit", "buy", 2_700.0)
    # realized = 1 * -1 * (2,700 - 3,000) = 300
    assert closed.realized_pnl == pytest.approx(300.0)


def test_a_tick_only_touches_positions_on_its_own_symbol(w: World) -> None:
    w.do(long("BTCUSDT", 3_000, stop_loss=59_000.0), long("ETHUSDT", 3_000, stop_loss=2_950.0))
    w.events()
    w.broker.on_market(book_ticker("ETHUSDT", 2_900.0, 2_900.0))
    assert [e.symbol for e in w.events(PositionClosed)] == ["ETHUSDT"]
    assert set(w.broker.accounts["a"].positions) == {"BTCUSDT"}


def test_liquidation_happens_on_the_mark_not_on_the_bid(w: World) -> None:
    w.do(long("BTCUSDT", 6_000, lev=10))  # 0.1 BTC at 60,000, margin 600
    lp = w.broker.accounts["a"].positions["BTCUSDT"].liquidation_price
    # LP = (0.1 * 60,000 - 600) / (0.1 * (1 - 0.004)) = 5,400 / 0.0996 = 54,216.87
    assert lp == pytest.approx(54_216.867, abs=1e-3)
    cash = w.broker.accounts["a"].cash
    w.events()
    w.broker.on_market(book_ticker("BTCUSDT", 54_000.0, 54_000.0))
    assert w.events() == []  # bid below LP, but liquidation follows the mark
    w.broker.on_market(mark_price("BTCUSDT", 54_200.0))
    fill, closed, snap = w.events()
    assert fill.reason == closed.reason == snap.cause == "liquidation"
    assert fill.qty == closed.qty == 0.1
    # the whole 600 margin is lost: price loss 0.1 * (54,200 - 60,000) = -580, fee 20
    assert fill.realized_pnl == pytest.approx(-580.0)
    assert fill.fee == pytest.approx(20.0)
    assert w.broker.accounts["a"].cash == pytest.approx(cash)
    assert snap.equity == pytest.approx(cash)


def test_short_is_liquidated_when_the_mark_rises_to_its_price(w: World) -> None:
    w.do(short("ETHUSDT", 3_000, lev=10))
    lp = w.broker.accounts["a"].positions["ETHUSDT"].liquidation_price
    # LP = (1 * 3,000 + 300) / (1 * 1.004) = 3,286.85
    assert lp == pytest.approx(3_286.853, abs=1e-3)
    w.broker.on_market(mark_price("ETHUSDT", 3_286.0))
    assert w.broker.accounts["a"].positions
    w.broker.on_market(mark_price("ETHUSDT", 3_287.0))
    assert w.broker.accounts["a"].positions == {}
    assert w.broker.accounts["a"].state.liquidations == 1


def test_funding_is_charged_once_per_funding_time(w: World) -> None:
    funding_time = T0 + 3_600
    w.do(long("BTCUSDT", 6_000), short("ETHUSDT", 3_000))
    for s, mark in (("BTCUSDT", 61_000.0), ("ETHUSDT", 3_100.0)):
        w.broker.on_market(mark_price(s, mark, rate=0.0001, next_funding=funding_time))
    w.events()
    w.clock.set_time(funding_time + 1)
    for _ in range(2):  # the roll-over, then one more frame after it
        for s, mark in (("BTCUSDT", 61_000.0), ("ETHUSDT", 3_100.0)):
            w.broker.on_market(mark_price(s, mark, rate=0.0003, t=funding_time + 1,
                                          next_funding=funding_time + 28_800))
    paid = w.events(FundingPaid)
    # long 0.1 BTC: 0.1 * 61,000 * 0.0001 = 0.61 paid; short 1 ETH: -(3,100 * 0.0001) = -0.31
    assert [(p.symbol, round(p.amount, 6)) for p in paid] == [("BTCUSDT", 0.61),
                                                              ("ETHUSDT", -0.31)]
    assert w.broker.accounts["a"].funding == pytest.approx(0.30)


def test_no_funding_for_a_position_opened_after_the_funding_time(w: World) -> None:
    w.broker.on_market(mark_price("BTCUSDT", 60_000.0, rate=0.001, next_funding=T0 - 10))
    w.do(long("BTCUSDT", 6_000))  # opened at T0, after the funding time T0 - 10
    w.broker.on_market(mark_price("BTCUSDT", 60_000.0, next_funding=T0 + 28_790))
    assert w.events(FundingPaid) == []


def test_snapshot_restore_round_trip_is_exact(w: World) -> None:
    w.do(long("BTCUSDT", 3_000, stop_loss=55_000.0, take_profit=70_000.0, reason="trend"),
         short("ETHUSDT", 1_500, lev=3))
    w.broker.record_decision("a", valid=False, holds=True, cost_usd=0.0123)
    w.broker.accounts["a"].state.funding_settled["BTCUSDT"] = T0 - 100
    w.broker.on_market(mark_price("BTCUSDT", 61_000.0))
    snap = w.broker.snapshot("a", "cycle", "c1")
    as_dict = {f: getattr(snap, f) for f in snap.__slots__}
    fresh = PaperBroker(broker_settings(), risk_settings(), Bus(), w.clock, w.book,
                        symbols=["BTCUSDT", "ETHUSDT"])
    fresh.on_market(mark_price("BTCUSDT", 61_000.0))
    fresh.restore("a", as_dict)
    assert fresh.accounts["a"] == w.broker.accounts["a"]
    again = fresh.snapshot("a", "cycle", "c1")
    assert {f: getattr(again, f) for f in again.__slots__ if f != "id"} == {
        f: getattr(snap, f) for f in snap.__slots__ if f != "id"}
    # the restored positions still trigger
    fresh.on_market(book_ticker("BTCUSDT", 54_000.0))
    assert "BTCUSDT" not in fresh.accounts["a"].positions


def test_latency_cost_is_the_adverse_move_between_snapshot_and_fill(w: World) -> None:
    seen = snapshot_of(w.book)  # the cycle saw ETH at 3,000
    w.book.set("ETHUSDT", 3_010.0, 3_010.0)  # it rose 10 before the fill
    events = w.broker.execute("a", [long("ETHUSDT", 3_010)], "c1", seen)
    fill = next(e for e in events if isinstance(e, OrderFilled))
    assert fill.ref_price == 3_000.0
    # bought 1 ETH 10 higher than seen: cost = +10; selling after a rise would gain
    assert w.broker.accounts["a"].state.latency_cost == pytest.approx(10.0)
    seen = snapshot_of(w.book)
    w.book.set("ETHUSDT", 3_020.0, 3_020.0)
    w.broker.execute("a", [Action(symbol="ETHUSDT", action="close")], "c2", seen)
    assert w.broker.accounts["a"].state.latency_cost == pytest.approx(0.0)


def test_daily_loss_limit_suspends_until_midnight_then_lifts(w: World) -> None:
    w.do(long("BTCUSDT", 5_000, lev=2))  # 0.083 BTC; at 2x the liquidation price is 30,120
    w.events()
    w.broker.on_market(mark_price("BTCUSDT", 47_500.0))  # 0.083 * -12,500 = -1,037.5 (> 10 %)
    assert w.broker.blocked_reason("a", T0 + 60) == "daily_loss_limit"
    assert w.events(AccountSnapshot)[-1].cause == "risk"
    st = w.broker.accounts["a"].state
    assert st.suspended_until == T0 + 86_400  # next 00:00 UTC
    assert w.broker.blocked_reason("a", T0 + 86_400) is None


def test_max_drawdown_stops_the_trader_for_good(w: World) -> None:
    w.broker.accounts["a"].state.peak_equity = 20_000.0  # equity 10,000 is 50 % down
    assert w.broker.blocked_reason("a", T0) == "max_drawdown"
    assert w.broker.blocked_reason("a", T0 + 10 * 86_400) == "max_drawdown"


def test_views_for_the_prompt(w: World) -> None:
    w.do(long("ETHUSDT", 3_000, lev=3, stop_loss=2_900.0))
    w.book.set("ETHUSDT", 3_100.0, 3_100.0)
    w.broker.mark_all()
    view = w.broker.account_view("a")
    assert view["unrealized_pnl"] == pytest.approx(100.0)
    assert view["equity"] == pytest.approx(10_000 - 1.5 + 100)
    assert view["margin_used"] == pytest.approx(1_000.0)
    (pos,) = w.broker.positions_view("a")
    assert pos["roe_pct"] == pytest.approx(10.0)
    assert [f["side"] for f in w.broker.recent_fills("a", 5)] == ["buy"]
    assert w.broker.recent_fills("a", 0) == ()


def test_leaderboard_counts_decisions_and_is_published(w: World) -> None:
    w.broker.open_account("b", 10_000.0)
    w.do(long("ETHUSDT", 3_000), trader="b")
    w.book.set("ETHUSDT", 3_300.0, 3_300.0)
    w.broker.record_decision("a", valid=True, holds=True, cost_usd=0.5)
    w.broker.record_decision("a", valid=False, holds=True, cost_usd=0.5)
    board = w.broker.leaderboard("c1")
    assert w.events(Leaderboard) == [board]
    first, second = board.rows
    assert (first["trader"], second["trader"]) == ("b", "a")
    assert first["unrealized_pnl"] == pytest.approx(300.0)
    assert second["invalid_rate"] == 50.0 and second["hold_rate"] == 100.0
    assert second["net_return_pct"] == pytest.approx(-0.01)  # 1 USD of LLM on 10,000
    quiet = w.broker.leaderboard(None, publish=False)
    assert w.events(Leaderboard) == [] and quiet.rows == board.rows


def test_cycle_snapshots_feed_the_sharpe_series(w: World) -> None:
    for i, price in enumerate((3_000.0, 3_030.0, 3_015.0, 3_060.0)):
        if i == 0:
            w.do(long("ETHUSDT", 3_000, lev=1))
        w.book.set("ETHUSDT", price, price)
        w.broker.mark_all()
        w.broker.publish_snapshots("cycle", f"c{i}")
        w.clock.set_time(w.clock.time() + 300)
    returns = w.broker.accounts["a"].state.returns
    assert returns.n == 3
    assert w.broker.leaderboard(None, publish=False).rows[0]["sharpe"] is None  # 3 < 30 returns
    w.broker.board_settings = LeaderboardSettings(min_returns=3)
    assert w.broker.leaderboard(None, publish=False).rows[0]["sharpe"] is not None


async def test_run_watches_the_bus_and_snapshots_on_a_timer(clock: SimClock, bus: Bus) -> None:
    import asyncio

    w = World(clock, bus)
    w.do(long("BTCUSDT", 3_000, stop_loss=59_000.0))
    w.events()
    task = asyncio.create_task(w.broker.run())
    await clock.settle()
    bus.publish(book_ticker("BTCUSDT", 58_000.0))
    await clock.settle()
    assert [e.reason for e in w.events(PositionClosed)] == ["stop_loss"]
    await clock.advance(60)
    assert [s.cause for s in w.events(AccountSnapshot)] == ["timer"]
    await clock.advance(120)
    assert [s.cause for s in w.events(AccountSnapshot)] == ["timer", "timer"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_bad_market_event_is_counted_and_does_not_stop_the_watch(
        clock: SimClock, bus: Bus) -> None:
    import asyncio

    w = World(clock, bus)
    w.do(long("BTCUSDT", 3_000, stop_loss=59_000.0))
    task = asyncio.create_task(w.broker.run())
    await clock.settle()
    bus.publish(book_ticker("BTCUSDT", None))  # type: ignore[arg-type]
    bus.publish(book_ticker("BTCUSDT", 58_000.0))
    await clock.settle()
    assert w.broker.market_errors == 1
    assert w.broker.accounts["a"].positions == {}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_review_then_execute_a_decision(w: World) -> None:
    decision = Decision(actions=(long("BTCUSDT", 3_000), long("FOOUSDT", 100)))
    approved, rejected = w.broker.review("a", decision, snapshot_of(w.book), T0, "c1")
    assert [a.symbol for a in approved] == ["BTCUSDT"]
    assert [(r.symbol, r.rule, r.cycle_id) for r in rejected] == [
        ("FOOUSDT", "unknown_symbol", "c1")]
    assert w.events(DecisionRejected) == []  # the cycle publishes refusals, not review
    w.broker.execute("a", approved, "c1", snapshot_of(w.book))
    assert list(w.broker.accounts["a"].positions) == ["BTCUSDT"]
