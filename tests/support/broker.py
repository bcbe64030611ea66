"""Hand-written fakes for the broker tests: a price book, a market snapshot, event helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from engine.events import BookTicker, MarkPrice
from engine.paper.accounts import Account
from engine.paper.leaderboard import point_rows, rank_rows
from engine.settings import BrokerSettings, RiskSettings, SymbolFilter

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the SimClock's default start

FILTERS = {
    "BTCUSDT": SymbolFilter(step_size=0.001, tick_size=0.1, min_notional=100.0,
                            maint_margin_rate=0.004),
    "ETHUSDT": SymbolFilter(step_size=0.001, tick_size=0.01, min_notional=20.0,
                            maint_margin_rate=0.004),
    "SOLUSDT": SymbolFilter(step_size=1, tick_size=0.01, min_notional=5.0,
                            maint_margin_rate=0.005),
}


def broker_settings(**kw: Any) -> BrokerSettings:
    """Return broker settings with the test filters (and no slippage unless asked)."""
    return BrokerSettings(**{"symbols": FILTERS, "slippage_bps": 0.0, **kw})


def risk_settings(**kw: Any) -> RiskSettings:
    return RiskSettings(**kw)


@dataclass(frozen=True, slots=True)
class FakeQuote:
    symbol: str
    bid: float
    ask: float
    last: float
    mark: float
    updated: float = T0  # local receive time of the price

    def age(self, now: float) -> float:
        return max(0.0, now - self.updated)

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2

    @property
    def price(self) -> float | None:
        return self.mark if self.mark > 0 else self.mid


class FakeBook:
    """Anything with `.quote(symbol)`: set prices by hand."""

    def __init__(self) -> None:
        self.quotes: dict[str, FakeQuote] = {}

    def set(self, symbol: str, bid: float, ask: float | None = None,
            mark: float | None = None, t: float = T0) -> None:
        ask = bid if ask is None else ask
        mark = (bid + ask) / 2 if mark is None else mark
        self.quotes[symbol] = FakeQuote(symbol, bid, ask, (bid + ask) / 2, mark, t)

    def quote(self, symbol: str) -> FakeQuote | None:
        return self.quotes.get(symbol)


@dataclass(frozen=True, slots=True)
class FakeSymbolSnapshot:
    symbol: str
    bid: float
    ask: float
    mark: float
    last: float = math.nan


@dataclass(frozen=True, slots=True)
class FakeSnapshot:
    ts: float
    symbols: dict[str, FakeSymbolSnapshot] = field(default_factory=dict)
    stale: tuple[str, ...] = ()


def snapshot_of(book: FakeBook, ts: float = T0, stale: tuple[str, ...] = ()) -> FakeSnapshot:
    """Return a market snapshot of the fake book's current prices."""
    return FakeSnapshot(ts, {s: FakeSymbolSnapshot(s, q.bid, q.ask, q.mark)
                             for s, q in book.quotes.items()}, stale)


def book_ticker(symbol: str, bid: float, ask: float | None = None, t: float = T0) -> BookTicker:
    return BookTicker(symbol, bid, 1.0, bid if ask is None else ask, 1.0, t, t)


def mark_price(symbol: str, mark: float, *, rate: float = 0.0, next_funding: float = T0 + 28_800,
               t: float = T0) -> MarkPrice:
    return MarkPrice(symbol, mark, mark, rate, next_funding, t, t)


def build_rows(accounts: list[Account], marks: dict[str, float], now: float, *,
               min_returns: int = 2, **rank: Any) -> tuple[dict[str, Any], ...]:
    """The leaderboard's rows as the board shows them: point estimates, then ranks from
    `stats` (`rank_rows`' keywords)."""
    return rank_rows(point_rows(accounts, marks, now, min_returns=min_returns), **rank)
