"""The price book: the newest prices of every symbol, each with its exchange and receive time.

The feed applies already-validated market events; readers get an immutable `Quote` that says how
old it is. A symbol whose newest price is older than `max_price_age_seconds` is stale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.events import BookTicker, Kline, MarketEvent, MarkPrice, Ticker24h

_NAN = math.nan


@dataclass(frozen=True, slots=True)
class Quote:
    """One symbol's prices, with exchange and local receive times (NaN where never received)."""

    symbol: str
    bid: float
    ask: float
    last: float
    mark: float
    index: float
    funding_rate: float
    next_funding_time: float
    change_pct: float
    high_24h: float
    low_24h: float
    volume_24h: float
    quote_volume_24h: float
    updated: float  # local receive time of the newest price for this symbol
    exchange_time: float  # exchange event time of that price

    def age(self, now: float) -> float:
        """Return seconds since the newest price of this symbol was received."""
        return max(0.0, now - self.updated)

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0

    @property
    def price(self) -> float | None:
        """Return the best reference price: mark, else bid/ask mid, else last."""
        return _reference(self.mark, self.bid, self.ask, self.last)


def _reference(mark: float, bid: float, ask: float, last: float) -> float | None:
    # NaN compares false, so `x > 0` also rejects "never received".
    if mark > 0:
        return mark
    if bid > 0 and ask > 0:
        return (bid + ask) / 2.0
    if last > 0:
        return last
    return None


class _Entry:
    """Mutable per-symbol state; the hot path updates attributes in place."""

    __slots__ = (
        "ask",
        "bid",
        "change_pct",
        "exchange_time",
        "funding_rate",
        "high_24h",
        "index",
        "last",
        "low_24h",
        "mark",
        "next_funding_time",
        "quote_volume_24h",
        "updated",
        "volume_24h",
    )

    def __init__(self) -> None:
        self.bid = self.ask = self.last = self.mark = self.index = _NAN
        self.funding_rate = self.next_funding_time = _NAN
        self.change_pct = self.high_24h = self.low_24h = _NAN
        self.volume_24h = self.quote_volume_24h = _NAN
        self.updated = -math.inf
        self.exchange_time = _NAN

    def touch(self, recv_time: float, event_time: float) -> None:
        if recv_time >= self.updated:
            self.updated = recv_time
            self.exchange_time = event_time


class PriceBook:
    """Newest prices per symbol, updated by the feed, read by the broker and the cycle."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def entry(self, symbol: str) -> _Entry:
        """Return `symbol`'s mutable entry, made on first use and never replaced: the feed's
        fast path (engine/market/hotpath.py) keeps it and writes an event's fields in place."""
        entry = self._entries.get(symbol)
        if entry is None:
            entry = self._entries[symbol] = _Entry()
        return entry

    def apply(self, event: MarketEvent) -> None:
        """Apply one validated market event."""
        e = self._entries.get(event.symbol)
        if e is None:
            e = self.entry(event.symbol)
        kind = type(event)
        if kind is BookTicker:
            e.bid = event.bid  # type: ignore[union-attr]
            e.ask = event.ask  # type: ignore[union-attr]
        elif kind is MarkPrice:
            e.mark = event.mark  # type: ignore[union-attr]
            e.index = event.index  # type: ignore[union-attr]
            e.funding_rate = event.funding_rate  # type: ignore[union-attr]
            e.next_funding_time = event.next_funding_time  # type: ignore[union-attr]
        elif kind is Kline:
            e.last = event.close  # type: ignore[union-attr]
        elif kind is Ticker24h:
            e.last = event.last  # type: ignore[union-attr]
            e.change_pct = event.change_pct  # type: ignore[union-attr]
            e.high_24h = event.high  # type: ignore[union-attr]
            e.low_24h = event.low  # type: ignore[union-attr]
            e.volume_24h = event.volume  # type: ignore[union-attr]
            e.quote_volume_24h = event.quote_volume  # type: ignore[union-attr]
        else:
            return
        recv = event.recv_time
        if recv >= e.updated:  # Entry.touch, inlined: this runs once per frame
            e.updated = recv
            e.exchange_time = event.event_time

    def quote(self, symbol: str) -> Quote | None:
        """Return an immutable copy of `symbol`'s prices, or None when never seen."""
        e = self._entries.get(symbol)
        if e is None:
            return None
        return Quote(
            symbol=symbol, bid=e.bid, ask=e.ask, last=e.last, mark=e.mark, index=e.index,
            funding_rate=e.funding_rate, next_funding_time=e.next_funding_time,
            change_pct=e.change_pct, high_24h=e.high_24h, low_24h=e.low_24h,
            volume_24h=e.volume_24h, quote_volume_24h=e.quote_volume_24h,
            updated=e.updated, exchange_time=e.exchange_time,
        )

    def age(self, symbol: str, now: float) -> float:
        """Return seconds since `symbol`'s newest price arrived (inf when never seen)."""
        e = self._entries.get(symbol)
        if e is None or e.updated == -math.inf:
            return math.inf
        return max(0.0, now - e.updated)

    def stale(self, now: float, max_age: float,
              symbols: tuple[str, ...] | None = None) -> list[str]:
        """Return the symbols (known ones, or `symbols`) whose price is older than `max_age`."""
        names = symbols if symbols is not None else tuple(self._entries)
        return [s for s in names if self.age(s, now) > max_age]

    def price(self, symbol: str) -> float | None:
        """Return the best reference price (mark, else mid, else last), or None."""
        e = self._entries.get(symbol)
        if e is None:
            return None
        return _reference(e.mark, e.bid, e.ask, e.last)

    def symbols(self) -> tuple[str, ...]:
        """Return every symbol seen so far."""
        return tuple(self._entries)

    def state(self) -> dict[str, Quote]:
        """Return a quote for every symbol (for comparisons and status)."""
        return {s: q for s in self._entries if (q := self.quote(s)) is not None}
