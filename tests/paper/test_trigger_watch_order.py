"""The broker's trigger watch sees the market in the order the book did, live as in a replay.

Live, the bus hands market events to the trigger watch a loop turn after the feed applied them to
the book; a replay hands them over right after each record. A cycle's fill therefore first lets
the watch catch up (a mark before the fill charges no funding on the position the fill opens),
and a stop fills at its event's receive time, whenever the bus got to it.
"""

from __future__ import annotations

import asyncio

from engine.bus import Bus
from engine.clock import SimClock
from engine.cycle import CycleContext, TradingCycle
from engine.decision import Action
from engine.events import BookTicker, FundingPaid, MarkPrice, OrderFilled
from engine.paper.broker import PaperBroker
from engine.paper.steps import ExecuteStep
from tests.support.broker import (
    T0,
    FakeBook,
    book_ticker,
    broker_settings,
    mark_price,
    risk_settings,
    snapshot_of,
)


def watched(clock: SimClock, bus: Bus) -> PaperBroker:
    book = FakeBook()
    book.set("BTCUSDT", 60_000.0, 60_000.0)
    broker = PaperBroker(broker_settings(), risk_settings(), bus, clock, book,
                         symbols=["BTCUSDT"])
    broker.open_account("a", 10_000.0)
    # the watch as PaperBroker.run subscribes it: a bus handler
    bus.subscribe("broker", (BookTicker, MarkPrice), capacity=100_000, policy="block",
                  handler=broker.triggers.on_events)
    return broker


async def test_a_mark_published_before_a_cycle_fill_reaches_the_watch_before_it(
        clock: SimClock, bus: Bus) -> None:
    broker = watched(clock, bus)
    paid = bus.subscribe("test", [FundingPaid], capacity=100)
    bus.publish(mark_price("BTCUSDT", 60_000.0, rate=0.001, next_funding=T0 + 28_800))
    bus.flush()
    # The next mark names a later funding time: it settles the previous one on open positions.
    bus.publish(mark_price("BTCUSDT", 60_000.0, rate=0.001, t=T0 + 1,
                           next_funding=T0 + 28_801))  # queued: the bus's turn comes later
    ctx = CycleContext(cycle_id="c1", trigger="manual", started_at=T0 + 1, dry_run=False)
    ctx.approved["a"] = [Action(symbol="BTCUSDT", action="open_long", size_usdt=6_000,
                                leverage=5)]
    await ExecuteStep(broker)(ctx)
    for _ in range(3):
        await asyncio.sleep(0)  # the bus's own flush, had the step left the mark queued
    assert ctx.fills == 1 and "BTCUSDT" in broker.accounts["a"].positions
    assert paid.drain() == [] and broker.accounts["a"].funding == 0.0


async def test_a_stop_fills_at_its_event_s_receive_time(clock: SimClock, bus: Bus) -> None:
    broker = watched(clock, bus)
    book = broker.book
    assert isinstance(book, FakeBook)
    broker.execute("a", [Action(symbol="BTCUSDT", action="open_long", size_usdt=6_000,
                                leverage=5, stop_loss=59_000.0)], "c1", snapshot_of(book))
    fills = bus.subscribe("test", [OrderFilled], capacity=100)
    clock.set_time(T0 + 2)
    bus.publish(book_ticker("BTCUSDT", 58_000.0, t=T0 + 1.5))  # received before the bus's turn
    clock.set_time(T0 + 3)
    bus.flush()
    [stop] = fills.drain()
    assert isinstance(stop, OrderFilled)
    assert (stop.reason, stop.ts) == ("stop_loss", T0 + 1.5)
    assert broker.accounts["a"].state.recent_fills[-1]["ts"] == T0 + 1.5


async def test_a_cycle_starts_with_the_marks_of_every_event_published_before_it(
        clock: SimClock, bus: Bus) -> None:
    broker = watched(clock, bus)
    seen: list[float] = []

    class ReadsMarks:
        name = "reads_marks"

        async def __call__(self, ctx: CycleContext) -> None:
            seen.append(broker.marks.get("BTCUSDT", 0.0))

    bus.publish(mark_price("BTCUSDT", 61_000.0))  # queued: the bus's turn comes later
    await TradingCycle([ReadsMarks()], clock, bus)("manual")
    assert seen == [61_000.0]
