"""Helpers for the feed tests: Binance-shaped frames and REST klines callbacks (aioresponses).

The fake Binance server itself is `engine.market.fakebinance.FakeBinance`.

Frames follow Binance's documented USD-M futures payloads (combined stream wrapper
`{"stream": ..., "data": ...}`, prices and quantities as strings, times in milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from aioresponses import CallbackResult

from engine.market.book import Quote
from engine.market.candles import Candle

T0 = 1_767_226_230.0  # 2026-01-01T00:10:30Z, mid-minute


def frame(stream: str, data: dict[str, Any]) -> str:
    return orjson.dumps({"stream": stream, "data": data}).decode()


def book_ticker(symbol: str, bid: float, ask: float, e_ms: int, u: int = 1,
                bid_qty: str = "1.500", ask_qty: str = "2.000") -> str:
    return frame(f"{symbol.lower()}@bookTicker", {
        "e": "bookTicker", "u": u, "E": e_ms, "T": e_ms - 1, "s": symbol,
        "b": f"{bid}", "B": bid_qty, "a": f"{ask}", "A": ask_qty})


def kline(symbol: str, c: Candle, e_ms: int, closed: bool) -> str:
    t = int(c.open_time * 1000)
    return frame(f"{symbol.lower()}@kline_1m", {
        "e": "kline", "E": e_ms, "s": symbol, "k": {
            "t": t, "T": t + 59_999, "s": symbol, "i": "1m", "f": 100, "L": 200,
            "o": f"{c.open}", "c": f"{c.close}", "h": f"{c.high}", "l": f"{c.low}",
            "v": f"{c.volume}", "n": 100, "x": closed, "q": "1.0", "V": "0.5", "Q": "0.5",
            "B": "0"}})


def mark_price(symbol: str, mark: float, e_ms: int, rate: float = 0.0001,
               index: float | None = None, next_funding_ms: int = 1_767_254_400_000) -> str:
    idx = mark if index is None else index
    return frame(f"{symbol.lower()}@markPrice@1s", {
        "e": "markPriceUpdate", "E": e_ms, "s": symbol, "p": f"{mark}", "i": f"{idx}",
        "P": f"{idx}", "r": f"{rate}", "T": next_funding_ms})


def ticker(symbol: str, last: float, e_ms: int, change_pct: float = 1.5,
           high: float | None = None, low: float | None = None) -> str:
    return frame(f"{symbol.lower()}@ticker", {
        "e": "24hrTicker", "E": e_ms, "s": symbol, "p": "1.0", "P": f"{change_pct}",
        "w": f"{last}", "c": f"{last}", "Q": "0.1", "o": f"{last}",
        "h": f"{high or last * 1.01}", "l": f"{low or last * 0.99}", "v": "1234.5",
        "q": "5678.9", "O": e_ms - 86_400_000, "C": e_ms, "F": 1, "L": 2, "n": 2})


def truth_candle(symbol: str, open_time: float) -> Candle:
    """Return the one true candle of `symbol` at `open_time` (what Binance would say)."""
    i = int(open_time // 60) % 10_000
    base = 100.0 if symbol == "BTCUSDT" else 10.0
    o = base + i % 37 * 0.5
    c = o + (i % 5 - 2) * 0.25
    return Candle(open_time, o, max(o, c) + 0.5, min(o, c) - 0.5, c, float(i % 11 + 1))


def minutes(first: float, last: float) -> list[float]:
    return [float(t) for t in range(int(first), int(last) + 1, 60)]


KLINES_URL = re.compile(r"^http://rest\.test/fapi/v1/klines\?.*$")
TIME_URL = re.compile(r"^http://rest\.test/fapi/v1/time$")


def time_callback(now: Callable[[], float]) -> Callable[..., CallbackResult]:
    """Answer /fapi/v1/time like Binance: its clock, `now()`, in milliseconds."""

    def callback(url: Any, **kwargs: Any) -> CallbackResult:
        return CallbackResult(status=200, body=orjson.dumps({"serverTime": int(now() * 1000)})
                              .decode())

    return callback


def klines_callback(requests: list[dict[str, str]], now: Callable[[], float]
                    ) -> Callable[..., CallbackResult]:
    """Answer /fapi/v1/klines like Binance, from `truth_candle`, logging each query."""

    def callback(url: Any, **kwargs: Any) -> CallbackResult:
        query = {k: v[0] for k, v in parse_qs(urlsplit(str(url)).query).items()}
        requests.append(query)
        symbol, limit = query["symbol"], int(query["limit"])
        start = int(query["startTime"]) / 1000 if "startTime" in query else None
        end = int(query["endTime"]) / 1000 if "endTime" in query else now()
        first = start if start is not None else (end // 60 - limit + 1) * 60
        first = math.ceil(first / 60) * 60
        rows = []
        for t in minutes(first, end)[:limit]:
            c = truth_candle(symbol, t)
            rows.append([int(t * 1000), f"{c.open}", f"{c.high}", f"{c.low}", f"{c.close}",
                         f"{c.volume}", int(t * 1000) + 59_999, "0", 10, "0", "0", "0"])
        return CallbackResult(status=200, body=orjson.dumps(rows).decode(),
                              headers={"X-MBX-USED-WEIGHT-1M": str(len(requests))})

    return callback


async def eventually(cond: Callable[[], bool], what: str, tries: int = 500) -> None:
    """Poll `cond` (bounded) while real sockets do their work."""
    for _ in range(tries):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for: {what}")


def comparable(q: Quote | None) -> tuple | None:
    """Return a quote as a tuple with NaN as None, so two books compare with ==."""
    if q is None:
        return None
    return tuple(None if isinstance(v, float) and math.isnan(v) else v
                 for v in (getattr(q, f) for f in q.__dataclass_fields__))


@contextlib.asynccontextmanager
async def fresh_prices(binance: Any, prices: Mapping[str, float]) -> AsyncIterator[None]:
    """Send a book ticker and a mark price of every symbol every 0.2 s while inside, as Binance
    keeps prices fresh (pacing a server on the wall clock, not waiting for a result)."""
    async def feed() -> None:
        while True:
            e_ms = int(time.time() * 1000)
            for sym, px in prices.items():
                binance.send(book_ticker(sym, px, px * 1.0001, e_ms), mark_price(sym, px, e_ms))
            await asyncio.sleep(0.2)

    feeder = asyncio.create_task(feed())
    try:
        yield
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
