"""A halted arena (engine.halt): accounts frozen, no trigger fill, no fill from a cycle; the first
tick after resuming applies the triggers, and a funding time passed while halted is charged at
resume at that funding time's rate."""

from __future__ import annotations

import asyncio

import pytest

from engine.bus import Bus
from engine.clock import SimClock
from engine.cycle import CycleContext, SkipCycle
from engine.decision import Action
from engine.events import FundingPaid, JobRun, OrderFilled
from engine.halt import TradingGate
from engine.paper.broker import PaperBroker
from engine.paper.steps import ExecuteStep
from engine.scheduler import Job, Scheduler
from engine.settings import JobSettings
from tests.support.broker import (
    T0,
    FakeBook,
    book_ticker,
    broker_settings,
    mark_price,
    risk_settings,
    snapshot_of,
)


@pytest.fixture
def gate() -> TradingGate:
    return TradingGate()


@pytest.fixture
def broker(clock: SimClock, bus: Bus, gate: TradingGate) -> PaperBroker:
    book = FakeBook()
    book.set("BTCUSDT", 60_000.0, 60_000.0)
    b = PaperBroker(broker_settings(), risk_settings(), bus, clock, book, symbols=["BTCUSDT"],
                    gate=gate)
    b.open_account("a", 10_000.0)
    return b


def long_btc(**kw: float) -> Action:
    return Action(symbol="BTCUSDT", action="open_long", size_usdt=6_000, leverage=5, **kw)


def test_no_trigger_fills_while_halted_and_the_first_tick_after_resuming_applies_them(
    broker: PaperBroker, bus: Bus, gate: TradingGate
) -> None:
    broker.execute("a", [long_btc(stop_loss=59_000.0)], "c1", snapshot_of(broker.book))
    sub = bus.subscribe("test", [OrderFilled], capacity=100)
    gate.halt("storage (test)")
    broker.on_market(book_ticker("BTCUSDT", 58_000.0))  # through the stop: frozen
    assert sub.drain() == [] and "BTCUSDT" in broker.accounts["a"].positions

    gate.resume()
    broker.on_market(book_ticker("BTCUSDT", 58_500.0))
    [fill] = sub.drain()
    assert (fill.reason, fill.price) == ("stop_loss", 58_500.0)


def test_a_funding_time_passed_while_halted_is_charged_at_resume_at_its_own_rate(
    broker: PaperBroker, bus: Bus, gate: TradingGate, clock: SimClock
) -> None:
    funding_time = T0 + 3_600
    broker.execute("a", [long_btc()], "c1", snapshot_of(broker.book))
    broker.on_market(mark_price("BTCUSDT", 61_000.0, rate=0.0001, next_funding=funding_time))
    sub = bus.subscribe("test", [FundingPaid], capacity=100)
    gate.halt("storage (test)")
    clock.set_time(funding_time + 1)
    broker.on_market(mark_price("BTCUSDT", 61_000.0, rate=0.0009, t=funding_time + 1,
                                next_funding=funding_time + 28_800))
    assert sub.drain() == []

    gate.resume()
    clock.set_time(funding_time + 60)
    broker.on_market(mark_price("BTCUSDT", 62_000.0, rate=0.0009, t=funding_time + 60,
                                next_funding=funding_time + 28_800))
    [paid] = sub.drain()
    # 0.1 BTC at the resume's mark 62,000, at the halted funding time's rate 0.0001: 0.62
    assert (paid.rate, round(paid.amount, 6)) == (0.0001, 0.62)
    broker.on_market(mark_price("BTCUSDT", 62_000.0, rate=0.0009, t=funding_time + 61,
                                next_funding=funding_time + 28_800))
    assert sub.drain() == []  # once


async def test_a_cycle_executes_nothing_while_halted(broker: PaperBroker,
                                                     gate: TradingGate) -> None:
    ctx = CycleContext(cycle_id="c2", trigger="schedule", started_at=T0, dry_run=False)
    ctx.approved["a"] = [long_btc()]
    gate.halt("storage (test)")
    with pytest.raises(SkipCycle, match=r"trading halted: storage \(test\)"):
        await ExecuteStep(broker)(ctx)
    assert broker.accounts["a"].positions == {}


async def test_no_job_fires_while_halted_and_a_manual_trigger_is_refused(
    clock: SimClock, bus: Bus, gate: TradingGate
) -> None:
    runs: list[str] = []

    async def body(trigger: str) -> dict[str, str]:
        runs.append(trigger)
        return {}

    job = Job(JobSettings(name="tick", run="trading_cycle", schedule="interval",
                          interval_seconds=60), body)
    scheduler = Scheduler([job], clock, bus, gate=gate)
    jobs = bus.subscribe("test", [JobRun], capacity=100)
    task = asyncio.create_task(scheduler.run())
    await clock.settle()
    assert runs == ["schedule"]  # an interval job's first fire is at start
    jobs.drain()
    gate.halt("storage (test)")
    await clock.advance(61.0)
    assert runs == ["schedule"] and jobs.drain() == []  # no run, no skipped-job row
    started, reason, _ = await scheduler.trigger("tick")
    assert (started, reason) == (False, "trading halted: storage (test)")

    gate.resume()
    await clock.advance(60.0)
    assert runs == ["schedule", "schedule"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
