"""engine.ready (and --once's cycle) waits for a fresh price of every symbol, bounded by
engine.ready_wait_seconds, and lists the symbols still stale when the wait expired."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace

from structlog.testing import capture_logs

from engine.app.engine import Engine, Options
from engine.clock import SimClock
from engine.events import BookTicker
from engine.market.book import PriceBook
from engine.settings import EngineSettings, FeedSettings, Secrets, Settings

T0 = 1_767_225_600.0


def engine_on(clock: SimClock) -> Engine:
    settings = Settings(engine=EngineSettings(ready_wait_seconds=20),
                        feed=FeedSettings(symbols=("BTCUSDT", "ETHUSDT"),
                                          max_price_age_seconds=10))
    e = Engine(settings, Secrets(None, None, None, None, None), Options(once=True))
    e.clock, e.book, e.strategies = clock, PriceBook(), {}
    e.scheduler = SimpleNamespace(paused=False)  # type: ignore[assignment]
    return e


def tick(symbol: str, t: float) -> BookTicker:
    return BookTicker(symbol, 100.0, 1.0, 100.1, 1.0, t, t)


async def test_ready_waits_for_every_symbol_then_says_so() -> None:
    clock = SimClock(T0)
    e = engine_on(clock)
    e.book.apply(tick("BTCUSDT", T0))
    with capture_logs() as logs:
        task = asyncio.create_task(e._ready())
        await clock.advance(3)
        assert not task.done()  # ETHUSDT has no price yet
        e.book.apply(tick("ETHUSDT", clock.time()))
        await clock.advance(0.1)
        await task
    (ready,) = [x for x in logs if x["event"] == "engine.ready"]
    assert ready["stale"] == [] and e.state == "running"
    assert clock.time() < T0 + 4
    # the start-up heap was frozen before ready (engine.app.memory; conftest thaws it)
    events = [x["event"] for x in logs]
    assert events.index("engine.heap_frozen") < events.index("engine.ready")
    assert gc.get_freeze_count() > 0


async def test_ready_lists_the_stale_symbols_when_the_wait_expires() -> None:
    clock = SimClock(T0)
    e = engine_on(clock)
    with capture_logs() as logs:
        task = asyncio.create_task(e._ready())
        for _ in range(25):
            e.book.apply(tick("BTCUSDT", clock.time()))  # BTC keeps ticking, ETH never does
            await clock.advance(1)
        await task
    (ready,) = [x for x in logs if x["event"] == "engine.ready"]
    assert ready["stale"] == ["ETHUSDT"]
    assert T0 + 20 <= clock.time() <= T0 + 25  # bounded by engine.ready_wait_seconds


async def test_the_once_cycle_waits_for_a_price_that_aged_after_ready() -> None:
    clock = SimClock(T0)
    e = engine_on(clock)
    e.book.apply(tick("BTCUSDT", T0 - 30))  # stale by now
    e.book.apply(tick("ETHUSDT", T0))
    task = asyncio.create_task(e._wait_prices())
    await clock.advance(2)
    assert not task.done()
    e.book.apply(tick("BTCUSDT", clock.time()))
    await clock.advance(0.1)
    assert await task == []
