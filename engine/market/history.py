"""Binance USD-M history for backtests: fetched once, cached on disk, turned into a replay stream.

`History.load(symbols, start, end)` fetches, per symbol and UTC day, the 1-minute klines
(`/fapi/v1/klines`), the 1-minute mark-price klines (`/fapi/v1/markPriceKlines`) and the funding
rates (`/fapi/v1/fundingRate`) through `BinanceRest` (the request-weight budget, the
`X-MBX-USED-WEIGHT-1M` header, 429/418 with Retry-After), paging as needed. A complete past day is
kept as one gzip JSON file under `backtest.cache_dir`, so a second run fetches nothing.

`stream()` turns it into frames shaped exactly like Binance's combined stream, each at the time
the exchange published it, and `write_recording()` stores them in the recording format the replay
reads (`engine.market.recording`):

* at the close time T of each minute (open + 59.999 s): the closed `kline_1m` (`x` true); the
  book (`bookTicker`) walks the minute's path, open → low → high → close for a rising minute and
  open → high → low → close for a falling one, each price with a spread of `backtest.spread_bps`
  around it (bid rounded down, ask up to the tick), so stops inside the minute trigger at its
  close; then `markPrice` with the mark-price kline's close (index = mark), the last funding rate
  already settled and the next funding time. The path's first three book frames form one `path`
  item that the replay hands to the feed only while a book tick can trigger something on the
  symbol (a position with a stop-loss or take-profit: `PaperBroker.book_triggers`); they change
  nothing else (the book after the minute is its close frame's, always replayed);
* at each funding time F: a `markPrice` announcing the rate settled at F (event time just before
  F), then one moving to the next funding time, so the broker charges the real rate at its real
  time and no rate is seen before F;
* at each close of a higher timeframe: that bucket, built from the minutes, as a backfill record;
* before the window: the warm-up (`feed.backfill_candles` 1m candles, `feed.backfill_higher_candles`
  per higher timeframe) as backfill records, as a live start would fetch it.

Everything published at one time is one `batch` line of the recording, in publication order.
Nothing in the stream is published before its time, so at simulated time t the engine holds only
what Binance had published by t. The 24 h ticker is not part of the history (those prompt fields
are null in a backtest).
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

from engine.market.binance import BinanceRest, klines_weight
from engine.market.candles import MINUTE, Candle, resample, timeframe_seconds
from engine.settings import Settings

log = structlog.get_logger("feed")

DAY = 86_400
STREAM_VERSION = 3  # part of a stream file's name: bump when `stream()` changes what it makes
PAGE = 1500  # klines per request (futures maximum)
FUNDING_PAGE = 1000


@dataclass(slots=True)
class SymbolHistory:
    """One symbol's history: 1m candles, 1m mark-price closes, funding (time, rate), warm-up."""

    candles: list[Candle] = field(default_factory=list)
    marks: dict[int, float] = field(default_factory=dict)  # open time -> mark close
    funding: list[tuple[float, float]] = field(default_factory=list)
    higher: dict[str, list[Candle]] = field(default_factory=dict)  # warm-up per timeframe


class HistoryError(Exception):
    """The history cannot be fetched (the message says why)."""


class History:
    """Fetches and caches Binance USD-M history and builds the backtest's replay stream."""

    def __init__(self, settings: Settings, rest: BinanceRest, *, now: float) -> None:
        self.settings = settings
        self.rest = rest
        self.now = now  # wall time: only days that ended before it are cached
        self.cache = Path(settings.backtest.cache_dir)
        self.fetched_days = 0
        self.cached_days = 0

    # ------------------------------------------------------------------ fetching

    async def load(self, symbols: tuple[str, ...], start: float,
                   end: float) -> dict[str, SymbolHistory]:
        """Return every symbol's history for [start - warm-up, end), from the cache or REST."""
        warmup = self.settings.feed.backfill_candles * MINUTE
        first_day = int((start - warmup) // DAY) * DAY
        out: dict[str, SymbolHistory] = {}
        for symbol in symbols:
            h = SymbolHistory()
            for day in range(first_day, math.ceil(end / DAY) * DAY, DAY):
                data = await self._day(symbol, day)
                h.candles += [Candle(*row) for row in data["klines"]
                              if start - warmup <= row[0] < end]
                h.marks.update({int(t): m for t, m in data["mark"] if t < end})
                h.funding += [(t, r) for t, r in data["funding"] if t < end + DAY]
            for tf in self.settings.feed.timeframes:
                h.higher[tf] = await self._higher(symbol, tf, start)
            out[symbol] = h
        return out

    async def _day(self, symbol: str, day: int) -> dict[str, Any]:
        path = self.cache / self.settings.feed.market / symbol / f"{day}.json.gz"
        if path.exists():
            self.cached_days += 1
            cached: dict[str, Any] = orjson.loads(gzip.decompress(path.read_bytes()))
            return cached
        last = day + DAY - MINUTE
        klines = await self._paged("klines", symbol, day, last)
        marks = await self._paged("markPriceKlines", symbol, day, last)
        funding = await self._funding(symbol, day, day + DAY - 1)
        data = {"klines": [[r[0] / 1000, *map(float, r[1:6])] for r in klines],
                "mark": [[r[0] / 1000, float(r[4])] for r in marks],
                "funding": funding}
        self.fetched_days += 1
        if day + DAY <= self.now:  # a complete day never changes: keep it
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(gzip.compress(orjson.dumps(data)))
            tmp.replace(path)
        return data

    async def _paged(self, path: str, symbol: str, first: float, last: float) -> list[list[Any]]:
        """Return every 1m row of `path` with open time in [first, last], page by page."""
        out: list[list[Any]] = []
        cursor = first
        while cursor <= last:
            limit = min(PAGE, int((last - cursor) // MINUTE) + 1)
            params = {"symbol": symbol, "interval": "1m", "startTime": int(cursor * 1000),
                      "endTime": int(last * 1000), "limit": limit}
            rows = await self.rest.get(path, params, klines_weight("futures", limit))
            if not isinstance(rows, list):
                raise HistoryError(f"{path} {symbol}: unexpected answer {str(rows)[:120]}")
            rows = [r for r in rows if cursor * 1000 <= r[0] <= last * 1000]
            if not rows:
                break
            out += rows
            cursor = rows[-1][0] / 1000 + MINUTE
        return out

    async def _funding(self, symbol: str, first: float, last: float) -> list[list[float]]:
        out: list[list[float]] = []
        cursor = first
        while True:
            params = {"symbol": symbol, "startTime": int(cursor * 1000),
                      "endTime": int(last * 1000), "limit": FUNDING_PAGE}
            rows = await self.rest.get("fundingRate", params, 1)
            rows = [r for r in rows if cursor * 1000 <= int(r["fundingTime"]) <= last * 1000]
            out += [[int(r["fundingTime"]) / 1000, float(r["fundingRate"])] for r in rows]
            if len(rows) < FUNDING_PAGE:
                return out
            cursor = out[-1][0] + 1

    async def _higher(self, symbol: str, tf: str, start: float) -> list[Candle]:
        n = self.settings.feed.backfill_higher_candles
        seconds = timeframe_seconds(tf)
        if not n:
            return []
        path = self.cache / self.settings.feed.market / symbol / f"{tf}-{int(start)}-{n}.json.gz"
        if path.exists():
            return [Candle(*r) for r in orjson.loads(gzip.decompress(path.read_bytes()))]
        last = (start // seconds) * seconds - seconds  # the newest bucket closed by `start`
        params = {"symbol": symbol, "interval": tf, "endTime": int(last * 1000), "limit": n}
        rows = await self.rest.get("klines", params, klines_weight("futures", n))
        candles = [[r[0] / 1000, *map(float, r[1:6])] for r in rows if r[0] <= last * 1000]
        if start <= self.now:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gzip.compress(orjson.dumps(candles)))
        return [Candle(*r) for r in candles]


# ---------------------------------------------------------------- the replay stream


def _num(x: float) -> str:
    return repr(float(x))


def _book_path(c: Candle) -> tuple[float, ...]:
    if c.close >= c.open:
        return (c.open, c.low, c.high, c.close)
    return (c.open, c.high, c.low, c.close)


def stream(history: dict[str, SymbolHistory], settings: Settings, start: float,
           end: float) -> Iterator[tuple[float, Any]]:
    """Yield (publication time, item) in time order for [start, end): the warm-up's backfill
    records, then one list per publication time of what is published then, in order."""
    half = settings.backtest.spread_bps / 2 / 10_000
    warm_t = start - 0.001
    for symbol, h in history.items():
        warm = [c for c in h.candles if c.open_time < start]
        yield warm_t, {"symbol": symbol, "interval": "1m", "candles": [list(c) for c in warm]}
        for tf, rows in h.higher.items():
            yield warm_t, {"symbol": symbol, "interval": tf, "candles": [list(c) for c in rows]}
    events: list[tuple[float, int, str, str | dict[str, Any]]] = []
    for n, (symbol, h) in enumerate(history.items()):
        events += _symbol_events(symbol, n, h, settings, start, end, half)
    events.sort(key=lambda e: (e[0], e[1]))
    batch: list[str | dict[str, Any]] = []
    for i, (t, _, _, item) in enumerate(events):  # one batch per publication time
        batch.append(item)
        if i + 1 == len(events) or events[i + 1][0] != t:
            yield t, batch
            batch = []


def _symbol_events(symbol: str, n: int, h: SymbolHistory, settings: Settings, start: float,
                   end: float, half: float) -> list[tuple[float, int, str, Any]]:
    lower = symbol.lower()
    tick = settings.broker.filter_for(symbol).tick_size
    funding = sorted(h.funding)
    times = [t for t, _ in funding]
    every = times[-1] - times[-2] if len(times) > 1 else 8 * 3600.0  # the funding interval
    out: list[tuple[float, int, str, Any]] = []
    seq = 0
    rate = 0.0  # the last funding rate settled (published) so far
    fi = 0
    while fi < len(funding) and funding[fi][0] <= start:
        rate = funding[fi][1]
        fi += 1
    window = [c for c in h.candles if start <= c.open_time < end]
    for c in window:
        close_t = c.open_time + MINUTE - 0.001
        while fi < len(funding) and funding[fi][0] <= close_t:  # funding settled before this close
            when, rate = funding[fi]
            nxt = funding[fi + 1][0] if fi + 1 < len(funding) else when + every
            mark = h.marks.get(int(c.open_time) - MINUTE, c.open)
            out.append((when, n, "f", _mark(lower, symbol, when - 0.001, mark, rate, when)))
            out.append((when, n, "g", _mark(lower, symbol, when, mark, rate, nxt)))
            fi += 1
        if fi < len(funding):
            next_funding = funding[fi][0]
        else:  # past the fetched rates: the schedule goes on (its rate is not known yet)
            last = times[-1] if times else start
            next_funding = last + (math.floor((close_t - last) / every) + 1) * every
        e_ms = round(close_t * 1000)
        kline = {"e": "kline", "E": e_ms, "s": symbol, "k": {
            "t": int(c.open_time * 1000), "T": e_ms, "s": symbol, "i": "1m", "o": _num(c.open),
            "c": _num(c.close), "h": _num(c.high), "l": _num(c.low), "v": _num(c.volume),
            "x": True}}
        out.append((close_t, n, "k", orjson.dumps({"stream": f"{lower}@kline_1m",
                                                    "data": kline}).decode()))
        books = []
        for price in _book_path(c):
            seq += 1
            bid = max(tick, math.floor(price * (1 - half) / tick + 1e-9) * tick)
            ask = math.ceil(price * (1 + half) / tick - 1e-9) * tick
            book = {"e": "bookTicker", "u": seq, "E": e_ms, "T": e_ms, "s": symbol,
                    "b": _num(round(bid, 10)), "B": "1", "a": _num(round(ask, 10)), "A": "1"}
            books.append(orjson.dumps({"stream": f"{lower}@bookTicker", "data": book}).decode())
        # The path inside the minute, replayed only while a stop/take could trigger on it.
        out.append((close_t, n, "p", {"path": symbol, "frames": books[:-1]}))
        out.append((close_t, n, "b", books[-1]))
        mark = h.marks.get(int(c.open_time), c.close)
        out.append((close_t, n, "m", _mark(lower, symbol, close_t, mark, rate, next_funding)))
    for tf in settings.feed.timeframes:  # each bucket once it has closed, from its minutes
        seconds = timeframe_seconds(tf)
        for bucket in resample(h.candles, seconds):
            closes = bucket.open_time + seconds
            if start < closes <= end and bucket.open_time >= h.candles[0].open_time:
                out.append((closes - 0.001, n, "z", {"symbol": symbol, "interval": tf,
                                                     "candles": [list(bucket)]}))
    return out


def _mark(lower: str, symbol: str, t: float, mark: float, rate: float, next_time: float) -> str:
    data = {"e": "markPriceUpdate", "E": round(t * 1000), "s": symbol, "p": _num(mark),
            "i": _num(mark), "P": _num(mark), "r": _num(rate), "T": round(next_time * 1000)}
    return orjson.dumps({"stream": f"{lower}@markPrice@1s", "data": data}).decode()


def write_recording(path: str | Path, items: Iterator[tuple[float, Any]]) -> int:
    """Write the stream in the recording format (`{"t", "raw"}` / `{"t", "backfill"}` lines, and
    `{"t", "batch"}` lines for the items published together, see `engine.market.recording`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with gzip.open(tmp, "wb", compresslevel=1) as fh:
        for t, item in items:
            key = "raw" if isinstance(item, str) else "batch" if isinstance(item, list) \
                else "backfill"
            fh.write(orjson.dumps({"t": t, key: item}))
            fh.write(b"\n")
            n += 1
    tmp.replace(path)
    return n
