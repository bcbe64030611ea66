"""The market snapshot: every symbol's prices and indicators at one instant, immutable.

All traders in a cycle see the same `MarketSnapshot`; `to_dict()` is deterministic (fixed key
order, NaN as None) so the prompt built from it can be hashed and the store can persist it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import structlog

from engine.clock import Clock
from engine.cycle import CycleContext, SkipCycle
from engine.market import indicators
from engine.market.book import PriceBook
from engine.market.candles import MINUTE, OHLCV, CandleStore, timeframe_seconds
from engine.settings import FeedSettings

RECENT_CLOSES = 10  # newest closes per timeframe kept in the snapshot (for prompts)

log = structlog.get_logger("cycle")


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) or math.isinf(x) else x


@dataclass(frozen=True, slots=True)
class SymbolSnapshot:
    """One symbol at the snapshot's instant (prices are None when never received)."""

    symbol: str
    price: float | None  # reference price: mark, else mid, else last
    bid: float | None
    ask: float | None
    last: float | None
    mark: float | None
    index: float | None
    funding_rate: float | None
    next_funding_time: float | None
    change_pct: float | None
    high_24h: float | None
    low_24h: float | None
    volume_24h: float | None
    quote_volume_24h: float | None
    updated: float | None
    exchange_time: float | None
    age: float  # seconds since the newest price (inf when never seen)
    stale: bool
    # timeframe ("1m", "15m", "4h") -> indicator name -> value (None until enough candles)
    indicators: Mapping[str, Mapping[str, float | None]]
    # timeframe -> newest closes, oldest first
    recent_closes: Mapping[str, tuple[float, ...]]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict with a fixed key order."""
        out: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if name == "indicators":
                value = {tf: dict(v) for tf, v in value.items()}
            elif name == "recent_closes":
                value = {tf: list(v) for tf, v in value.items()}
            elif name == "age":
                value = None if math.isinf(value) else round(value, 3)
            out[name] = value
        return out


_FIELDS = tuple(SymbolSnapshot.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class MarketSnapshot:
    """Every configured symbol at one instant; `stale` lists symbols not to decide on."""

    ts: float
    symbols: Mapping[str, SymbolSnapshot]
    stale: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict with a fixed key order (same input, same dict)."""
        return {
            "ts": self.ts,
            "stale": list(self.stale),
            "symbols": {name: snap.to_dict() for name, snap in self.symbols.items()},
        }

    def price(self, symbol: str) -> float | None:
        """Return the reference price of `symbol` in this snapshot."""
        snap = self.symbols.get(symbol)
        return snap.price if snap else None

    def fresh(self) -> tuple[str, ...]:
        """Return the symbols that are not stale."""
        return tuple(s for s in self.symbols if s not in self.stale)


def window_start(last_open: float, seconds: int, candles: int) -> float:
    """Return the open time the indicators of a series whose newest closed candle opened at
    `last_open` start from: the newest multiple of `candles` x `seconds` at least `candles`
    candles back, so the window holds `candles` to 2 x `candles` - 1 candles and moves only
    every `candles` candles (in between, each new candle extends the running recursions)."""
    span = candles * seconds
    return math.floor((last_open - (candles - 1) * seconds) / span) * span


class _Window:
    """One series' indicator window: the candles fed so far and the running indicators."""

    __slots__ = ("fed", "n", "running", "token", "values")

    def __init__(self, token: tuple[int, float] | None = None) -> None:
        self.token = token  # a 1m window: (CandleStore edits, its first candle's open time)
        self.n = 0
        self.fed = (b"", b"", b"", b"")  # the fed columns' bytes: open time, high, low, close
        self.running = indicators.Running()
        self.values: dict[str, float | None] | None = None  # those of the candles fed so far

    def holds_prefix_of(self, arrays: OHLCV) -> bool:
        """Return True when `arrays` starts with exactly the candles fed so far (bit for bit)."""
        n, fed = self.n, self.fed
        return (len(arrays) >= n and arrays.close[:n].tobytes() == fed[3]
                and arrays.open_time[:n].tobytes() == fed[0]
                and arrays.high[:n].tobytes() == fed[1] and arrays.low[:n].tobytes() == fed[2])

    def feed(self, arrays: OHLCV) -> None:
        """Feed the candles of `arrays` past those fed so far; keep a copy of what was fed."""
        n = self.n
        self.running.extend(arrays.high[n:].tolist(), arrays.low[n:].tolist(),
                            arrays.close[n:].tolist())
        self.n = len(arrays)
        self.fed = (arrays.open_time.tobytes(), arrays.high.tobytes(), arrays.low.tobytes(),
                    arrays.close.tobytes())
        self.values = None


def _has_nan(arrays: OHLCV, start: int = 0) -> bool:
    if start >= len(arrays):
        return False
    return bool(np.isnan(arrays.close[start:]).any() or np.isnan(arrays.high[start:]).any()
                or np.isnan(arrays.low[start:]).any())


class IndicatorCache:
    """Running indicators per (symbol, timeframe), kept between snapshots.

    A snapshot finds the window's candles (`window_start`) and, when they begin with the
    candles already fed (compared bit for bit, so a backfilled hole or a changed bucket is
    never missed), feeds only the new ones (none: the values already read are returned again);
    otherwise it starts the window again. Either way the values are those of the indicators
    computed afresh over the window (`summary`). A window holding a NaN is computed afresh
    (`summary_full`); the candles fed so far never hold one, so only new ones are checked.
    The 1m windows (`minutes`) are read from the store's columns and kept by its edit count
    instead (`_minute_indicators`).
    """

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], _Window] = {}
        self.minutes: dict[str, _Window] = {}  # symbol -> its 1m window (`_minute_indicators`)
        # (symbol, higher timeframe) -> (CandleStore.closed_key, indicators, recent closes)
        self.closed: dict[tuple[str, str], tuple[Any, Any, tuple[float, ...]]] = {}
        self.holes: set[tuple[str, str, float]] = set()  # missing buckets already logged

    def values(self, key: tuple[str, str], arrays: OHLCV) -> dict[str, float | None]:
        """Return the indicators of the window `arrays` (closed candles, oldest first)."""
        w = self._windows.get(key)
        if w is None or not w.holds_prefix_of(arrays):
            w = self._windows[key] = _Window()
        if _has_nan(arrays, w.n):
            self._windows.pop(key, None)
            return indicators.summary_full(arrays.high, arrays.low, arrays.close)
        if len(arrays) > w.n:
            w.feed(arrays)
        if w.values is None:
            w.values = w.running.values()
        return dict(w.values)


def _minute_indicators(candles: CandleStore, symbol: str, limit: int, cache: IndicatorCache
                       ) -> tuple[Mapping[str, float | None], tuple[float, ...]] | None:
    """Return the 1m indicators as `_indicators` does, straight from the store's columns (None:
    no candles).

    The window is the candles from `window_start` on; while the store counts no edit and the
    window's first candle stays the same, the candles fed so far are still its start, bit for
    bit (held 1m candles are only appended or dropped from the front otherwise), so only the
    new ones are fed: no copy of the window, no comparison of it. Else the window starts again.
    """
    held = candles.minutes(symbol)
    if held is None:
        return None
    cols, edits = held
    newest = float(cols[0, -1])
    first = int(cols[0].searchsorted(window_start(newest, MINUTE, limit)))
    size = cols.shape[1] - first
    token = (edits, float(cols[0, first]))
    w = cache.minutes.get(symbol)
    if w is None or w.token != token or w.n > size:
        w = cache.minutes[symbol] = _Window(token)
    if size > w.n:
        new = cols[2:5, first + w.n:]  # high, low, close
        if np.isnan(new).any():  # a NaN among the new candles: the window afresh
            del cache.minutes[symbol]
            values = indicators.summary_full(cols[2, first:], cols[3, first:], cols[4, first:])
            values["closed_until"] = newest + MINUTE
            return MappingProxyType(values), tuple(cols[4, -RECENT_CLOSES:].tolist())
        w.running.extend(*new.tolist())
        w.n, w.values = size, None
    if w.values is None:
        w.values = w.running.values()
    values = dict(w.values)
    values["closed_until"] = newest + MINUTE
    return MappingProxyType(values), tuple(cols[4, -RECENT_CLOSES:].tolist())


def _withheld(symbol: str, tf: str, hole: float, cache: IndicatorCache
              ) -> tuple[Mapping[str, float | None], tuple[float, ...]]:
    """Return no indicators for a timeframe with a missing bucket (never computed over the
    gap); log `candles.missing_bucket` once per hole."""
    if (symbol, tf, hole) not in cache.holes:
        cache.holes.add((symbol, tf, hole))
        log.warning("candles.missing_bucket", symbol=symbol, timeframe=tf, open_time=hole,
                    detail=f"the {tf} bucket opening then was not fetched: its indicators are "
                    "withheld until the 1m series covers the gap")
    empty = np.empty(0, dtype=np.float64)
    values = cache.values((symbol, tf), OHLCV(*(empty for _ in range(6))))
    values["closed_until"] = None
    return MappingProxyType(values), ()


def _indicators(candles: CandleStore, symbol: str, tf: str, limit: int, cache: IndicatorCache
                ) -> tuple[Mapping[str, float | None], tuple[float, ...]]:
    """Return `tf`'s indicators on closed candles only, with `closed_until` (newest close).

    The 1m series holds closed candles only; a higher-timeframe bucket the closed 1m candles do
    not yet cover to its end is still forming and is left out (never shown as if final). The
    indicators are computed on the closed candles from `window_start` on (`limit` to
    2 x `limit` - 1 of them; all of them when the series is shorter).
    """
    seconds = timeframe_seconds(tf)
    if seconds == MINUTE and (got := _minute_indicators(candles, symbol, limit, cache)):
        return got
    if seconds != MINUTE and (hole := candles.missing_bucket(symbol, tf)) is not None:
        return _withheld(symbol, tf, hole, cache)
    key = candles.closed_key(symbol, tf) if seconds != MINUTE else None
    if key is not None:
        hit = cache.closed.get((symbol, tf))
        if hit is not None and hit[0] == key:  # the same closed buckets: the same values
            return hit[1], hit[2]
    # The newest 2 x limit candles hold the window (2 x limit - 1 at most) and a forming bucket.
    arrays = candles.arrays(symbol, tf, 2 * limit)
    end = len(arrays)
    if seconds != MINUTE and end:
        last_1m = candles.last_closed_time(symbol)
        if last_1m is not None and arrays.open_time[-1] + seconds > last_1m + MINUTE:
            end -= 1  # the forming bucket
    if end:
        newest = float(arrays.open_time[end - 1])
        first = int(arrays.open_time[:end].searchsorted(window_start(newest, seconds, limit)))
        window = arrays if not first and end == len(arrays) else OHLCV(
            *(column[first:end] for column in arrays))
        values = cache.values((symbol, tf), window)
        values["closed_until"] = newest + seconds
    else:
        values = cache.values((symbol, tf), OHLCV(*(column[:0] for column in arrays)))
        values["closed_until"] = None
    recent = tuple(arrays.close[max(0, end - RECENT_CLOSES):end].tolist())
    proxy = MappingProxyType(values)
    if key is not None:
        cache.closed[symbol, tf] = (key, proxy, recent)
    return proxy, recent


def take_snapshot(book: PriceBook, candles: CandleStore, settings: FeedSettings,
                  now: float, cache: IndicatorCache | None = None) -> MarketSnapshot:
    """Take an immutable snapshot of every configured symbol at `now`.

    `cache` keeps the running indicators between snapshots (the cycle's step holds one);
    without it they are computed afresh, to the same values."""
    cache = cache if cache is not None else IndicatorCache()
    timeframes = ("1m", *(tf for tf in settings.timeframes if tf != "1m"))
    max_age = settings.max_price_age_seconds
    symbols: dict[str, SymbolSnapshot] = {}
    stale: list[str] = []
    for symbol in settings.symbols:
        q = book.quote(symbol)
        age = book.age(symbol, now)
        is_stale = age > max_age
        if is_stale:
            stale.append(symbol)
        ind: dict[str, Mapping[str, float | None]] = {}
        recent: dict[str, tuple[float, ...]] = {}
        for tf in timeframes:
            ind[tf], recent[tf] = _indicators(candles, symbol, tf, settings.indicator_candles,
                                              cache)
        symbols[symbol] = SymbolSnapshot(
            symbol=symbol,
            price=book.price(symbol),
            bid=_num(q.bid) if q else None,
            ask=_num(q.ask) if q else None,
            last=_num(q.last) if q else None,
            mark=_num(q.mark) if q else None,
            index=_num(q.index) if q else None,
            funding_rate=_num(q.funding_rate) if q else None,
            next_funding_time=_num(q.next_funding_time) if q else None,
            change_pct=_num(q.change_pct) if q else None,
            high_24h=_num(q.high_24h) if q else None,
            low_24h=_num(q.low_24h) if q else None,
            volume_24h=_num(q.volume_24h) if q else None,
            quote_volume_24h=_num(q.quote_volume_24h) if q else None,
            updated=_num(q.updated) if q else None,
            exchange_time=_num(q.exchange_time) if q else None,
            age=age,
            stale=is_stale,
            indicators=MappingProxyType(ind),
            recent_closes=MappingProxyType(recent),
        )
    return MarketSnapshot(ts=now, symbols=MappingProxyType(symbols), stale=tuple(stale))


class MarketSnapshotStep:
    """Take one immutable snapshot that every trader of the cycle sees; skip on all-stale."""

    name = "market_snapshot"

    def __init__(self, book: Any, candles: Any, feed_settings: Any, clock: Clock) -> None:
        self._take = take_snapshot
        self._book, self._candles, self._settings, self._clock = book, candles, feed_settings, clock
        self._cache = IndicatorCache()

    async def __call__(self, ctx: CycleContext) -> None:
        # The cycle's start instant: a replay fires the cycle at the recorded one (same loop
        # turn as live, so the same book), and the snapshot time matches it to the microsecond.
        snap = self._take(self._book, self._candles, self._settings, ctx.started_at,
                          self._cache)
        ctx.snapshot = snap
        stale = list(snap.stale)
        fresh = [s for s in snap.symbols if s not in snap.stale]
        ctx.summary.update(symbols=len(fresh), stale=stale)
        if stale:
            log.warning(
                "cycle.stale_symbols",
                symbols=stale,
                max_age_s=self._settings.max_price_age_seconds,
                detail="no decision on these symbols this cycle",
            )
        if not fresh:
            raise SkipCycle("every price is stale" if stale else "no prices yet")
