"""No decision fills on a stale price: the broker checks the price's age at execution time."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from engine.bus import Bus
from engine.clock import SimClock
from engine.cycle import TradingCycle
from engine.decision import Action, Decision
from engine.events import BookTicker, DecisionRejected, OrderFilled
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.snapshot import MarketSnapshotStep
from engine.paper.broker import PaperBroker
from engine.paper.steps import ExecuteStep, PnLStep, RiskStep
from engine.settings import FeedSettings, LLMSettings
from engine.traders.decide import DecideStep, DecisionStep
from strategies.base import DecisionOutcome, TraderContext, rule_outcome
from tests.support.broker import T0, FakeBook, broker_settings, risk_settings, snapshot_of

MAX_AGE = 10.0


def buy(symbol: str = "BTCUSDT", size: float = 1_000.0) -> Action:
    return Action(symbol=symbol, action="open_long", size_usdt=size, leverage=2)


def fake_broker(clock: SimClock, bus: Bus, book: object) -> PaperBroker:
    broker = PaperBroker(broker_settings(), risk_settings(), bus, clock, book,
                         symbols=["BTCUSDT", "ETHUSDT"], max_price_age=MAX_AGE)
    broker.open_account("a", 10_000.0)
    return broker


def test_execute_refuses_a_fill_on_a_300_s_old_price(clock: SimClock, bus: Bus) -> None:
    book = FakeBook()
    book.set("BTCUSDT", 60_000.0, t=T0)
    broker = fake_broker(clock, bus, book)
    clock.set_time(T0 + 300)
    with capture_logs() as logs:
        events = broker.execute("a", [buy()], "c1", snapshot_of(book))
    (refusal,) = [e for e in events if isinstance(e, DecisionRejected)]
    assert (refusal.rule, refusal.symbol, refusal.action) == ("price_stale", "BTCUSDT",
                                                              "open_long")
    assert "300.0s old" in refusal.detail and not any(isinstance(e, OrderFilled) for e in events)
    assert broker.accounts["a"].cash == 10_000.0 and not broker.accounts["a"].positions
    (line,) = [x for x in logs if x["event"] == "broker.fill_refused"]
    assert line["rule"] == "price_stale"


def test_execute_fills_on_a_price_within_the_limit(clock: SimClock, bus: Bus) -> None:
    book = FakeBook()
    book.set("BTCUSDT", 60_000.0, t=T0)
    broker = fake_broker(clock, bus, book)
    clock.set_time(T0 + MAX_AGE)  # exactly the limit is still fresh
    events = broker.execute("a", [buy()], "c1", snapshot_of(book))
    assert isinstance(events[0], OrderFilled)


def test_a_close_on_a_stale_price_is_refused_and_the_position_kept(clock: SimClock,
                                                                   bus: Bus) -> None:
    book = FakeBook()
    book.set("BTCUSDT", 60_000.0, t=T0)
    broker = fake_broker(clock, bus, book)
    broker.execute("a", [buy()], "c1", snapshot_of(book))
    clock.set_time(T0 + 60)
    close = Action(symbol="BTCUSDT", action="close")
    events = broker.execute("a", [close], "c2", snapshot_of(book))
    assert [e.rule for e in events if isinstance(e, DecisionRejected)] == ["price_stale"]
    assert "BTCUSDT" in broker.accounts["a"].positions


def test_moving_a_stop_needs_no_fresh_price(clock: SimClock, bus: Bus) -> None:
    book = FakeBook()
    book.set("BTCUSDT", 60_000.0, t=T0)
    broker = fake_broker(clock, bus, book)
    broker.execute("a", [buy()], "c1", snapshot_of(book))
    clock.set_time(T0 + 60)
    move = Action(symbol="BTCUSDT", action="hold", stop_loss=55_000.0)
    events = broker.execute("a", [move], "c2", snapshot_of(book))
    assert not any(isinstance(e, DecisionRejected) for e in events)
    assert broker.accounts["a"].positions["BTCUSDT"].stop_loss == 55_000.0


# ---------------------------------------------------------------- through the real cycle


class SlowBuyer:
    """Answers after `delay` seconds on the engine clock with one buy (a slow LLM)."""

    name = "slow"

    def __init__(self, clock: SimClock, delay: float) -> None:
        self.clock, self.delay = clock, delay

    async def decide(self, ctx: TraderContext) -> DecisionOutcome:
        await self.clock.sleep(self.delay)
        return rule_outcome(Decision(actions=(buy(),)), "slow buyer")


def tick(symbol: str, bid: float, t: float) -> BookTicker:
    return BookTicker(symbol, bid, 1.0, bid + 0.1, 1.0, t, t)


def real_cycle(clock: SimClock, bus: Bus, delay: float) -> tuple[TradingCycle, PriceBook,
                                                                  PaperBroker]:
    feed = FeedSettings(symbols=("BTCUSDT",), max_price_age_seconds=MAX_AGE)
    book = PriceBook()
    broker = PaperBroker(broker_settings(), risk_settings(), bus, clock, book,
                         symbols=feed.symbols, max_price_age=feed.max_price_age_seconds)
    broker.open_account("slow", 10_000.0)
    decisions = DecisionStep({"slow": SlowBuyer(clock, delay)}, LLMSettings(), clock, bus)
    cycle = TradingCycle([
        MarketSnapshotStep(book, CandleStore(feed), feed, clock),
        DecideStep(decisions, broker, risk_settings()),
        RiskStep(broker, bus),
        ExecuteStep(broker),
        PnLStep(broker),
    ], clock, bus)
    return cycle, book, broker


async def run_cycle(clock: SimClock, cycle: TradingCycle, *, answer_after: float,
                    ticks: tuple[BookTicker, ...] = (), book: PriceBook | None = None) -> dict:
    task = asyncio.create_task(cycle("manual"))
    await clock.settle()  # the trader is waiting for its answer
    for t in ticks:
        await clock.advance_to(t.recv_time)
        book.apply(t)  # type: ignore[union-attr]
    await clock.advance_to(T0 + answer_after)
    return await asyncio.wait_for(task, 5)


async def test_a_trader_answering_after_45_s_without_a_tick_is_not_filled(
        clock: SimClock, bus: Bus) -> None:
    cycle, book, broker = real_cycle(clock, bus, delay=45.0)
    book.apply(tick("BTCUSDT", 60_000.0, T0 - 1))  # fresh when the snapshot is taken
    sub = bus.subscribe("test", [DecisionRejected, OrderFilled], capacity=100)
    with capture_logs() as logs:
        summary = await run_cycle(clock, cycle, answer_after=45.0)
    got = sub.drain()
    assert summary["status"] == "ok" and summary["fills"] == 0
    (refusal,) = got
    assert isinstance(refusal, DecisionRejected) and refusal.rule == "price_stale"
    assert "46.0s old" in refusal.detail
    assert any(x["event"] == "broker.fill_refused" and x["rule"] == "price_stale" for x in logs)
    acc = broker.accounts["slow"]
    assert acc.cash == 10_000.0 and not acc.positions


async def test_a_trader_answering_after_45_s_with_fresh_ticks_is_filled(
        clock: SimClock, bus: Bus) -> None:
    cycle, book, broker = real_cycle(clock, bus, delay=45.0)
    book.apply(tick("BTCUSDT", 60_000.0, T0 - 1))
    ticks = (tick("BTCUSDT", 60_010.0, T0 + 20), tick("BTCUSDT", 60_020.0, T0 + 40))
    summary = await run_cycle(clock, cycle, answer_after=45.0, ticks=ticks, book=book)
    assert summary["fills"] == 1 and summary["rejected"] == 0
    pos = broker.accounts["slow"].positions["BTCUSDT"]
    assert pos.entry_price == pytest.approx(60_020.1)  # the ask of the newest tick
    acc = broker.accounts["slow"]
    equity = acc.equity({"BTCUSDT": 60_020.05})
    assert equity == pytest.approx(acc.cash + acc.margin() + acc.unrealized(
        {"BTCUSDT": 60_020.05}), abs=0.005)
