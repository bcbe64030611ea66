"""The cycle summary counts a trader sitting out its cool-down as `cooldown`, not `invalid`."""

from __future__ import annotations

from engine.bus import Bus
from engine.clock import SimClock
from engine.cycle import TradingCycle
from engine.events import BookTicker
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.snapshot import MarketSnapshotStep
from engine.paper.broker import PaperBroker
from engine.paper.steps import ExecuteStep, PnLStep, RiskStep
from engine.settings import FeedSettings, LLMSettings
from engine.traders.decide import DecideStep, DecisionStep
from strategies.base import DecisionOutcome, TraderContext
from tests.support.broker import broker_settings, risk_settings


class Broken:
    """A trader whose every answer fails."""

    name = "broken"

    async def decide(self, ctx: TraderContext) -> DecisionOutcome:
        raise RuntimeError("no answer")


async def test_a_cooling_down_trader_is_counted_as_cooldown_not_invalid(clock: SimClock,
                                                                       bus: Bus) -> None:
    feed = FeedSettings(symbols=("BTCUSDT",))
    book = PriceBook()
    broker = PaperBroker(broker_settings(), risk_settings(), bus, clock, book,
                         symbols=feed.symbols, max_price_age=feed.max_price_age_seconds)
    broker.open_account("broken", 10_000.0)
    llm = LLMSettings(max_consecutive_failures=1, cooldown_seconds=600)
    decisions = DecisionStep({"broken": Broken()}, llm, clock, bus)
    cycle = TradingCycle([MarketSnapshotStep(book, CandleStore(feed), feed, clock),
                          DecideStep(decisions, broker, risk_settings()), RiskStep(broker, bus),
                          ExecuteStep(broker), PnLStep(broker)], clock, bus)
    summaries = []
    for _ in range(2):
        t = clock.time()
        book.apply(BookTicker("BTCUSDT", 60_000.0, 1.0, 60_000.1, 1.0, t, t))
        summaries.append(await cycle("manual"))
        await clock.advance(300)
    first, second = summaries
    assert (first["invalid"], first["valid"], first["cooldown"]) == (1, 0, [])
    assert (second["invalid"], second["valid"], second["cooldown"]) == (0, 0, ["broken"])
    assert broker.accounts["broken"].state.invalid == 1  # the cool-down cycle asked nobody
