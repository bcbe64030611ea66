"""Helpers for the feed tests: Binance-shaped frames, a fake Binance websocket server, REST klines.

Frames follow Binance's documented USD-M futures payloads (combined stream wrapper
`{"stream": ..., "data": ...}`, prices and quantities as strings, times in milliseconds).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from aioresponses import CallbackResult
from websockets.asyncio.server import Server, ServerConnection, serve

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


DROP = object()  # abort the TCP connection (no close frame)
CLOSE = object()  # close the connection normally (close frame 1000)


class FakeBinance:
    """A combined-stream websocket server on 127.0.0.1 driven by the test."""

    def __init__(self) -> None:
        self.outbox: asyncio.Queue[object] = asyncio.Queue()
        self.refuse = 0  # answer the next N handshakes with 503
        self.refused = 0
        self.connections = 0
        self.paths: list[str] = []
        self.server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def __aenter__(self) -> FakeBinance:
        self.server = await serve(self._handler, "127.0.0.1", 0,
                                  process_request=self._process_request)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        if self.refuse > 0:
            self.refuse -= 1
            self.refused += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy, try later\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.paths.append(ws.request.path if ws.request else "")
        closed = asyncio.ensure_future(ws.wait_closed())
        try:
            while True:
                get = asyncio.ensure_future(self.outbox.get())
                await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    return
                item = get.result()
                if item is DROP:
                    ws.transport.abort()
                    return
                if item is CLOSE:
                    await ws.close()
                    return
                await ws.send(item)  # type: ignore[arg-type]
        finally:
            closed.cancel()

    def send(self, *frames: str | object) -> None:
        for f in frames:
            self.outbox.put_nowait(f)


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
