"""The fake Binance USD-M server: REST and combined-stream websocket on 127.0.0.1.

REST (aiohttp): `/fapi/v1/klines`, `/fapi/v1/markPriceKlines`, `/fapi/v1/fundingRate`,
`/fapi/v1/exchangeInfo`, `/fapi/v1/leverageBracket` and `/fapi/v1/time`, answered from the
seeded price path of `synthetic` (or no candle history, or funding rows the caller gives).
Like Binance it returns at most `limit` rows (capped by `page`), only rows up to its clock's
now, and answers every request with `X-MBX-USED-WEIGHT-1M`.

Websocket (the `websockets` server): `/stream?streams=a/b/c`, Binance's combined streams. Frames
come from the test (`send`, with `DROP`, `CLOSE` and `GARBAGE` to break the connection on cue)
and, when a `market` is given, from that market's frames of the requested streams, each sent
when its time comes on the server's clock.

`faults` (engine.market.fakebinance.faults) injects rate limits, bans, 5xx, delays, missing
klines, refused handshakes, garbage frames, dropped connections and feed gaps.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus

import orjson
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from engine.clock import Clock, LiveClock
from engine.market import marketgen
from engine.market.fakebinance.faults import GARBAGE_FRAME, Faults
from engine.market.fakebinance.synthetic import (
    BASES,
    FUNDING_EVERY,
    INTERVALS,
    Candle,
    CandleSource,
    candle,
    exchange_info,
    funding_rate,
    funding_row,
    kline_row,
    leverage_brackets,
    price,
)

# (requested symbols, now) → (time, raw combined-stream frame), in time order
MarketSource = Callable[[tuple[str, ...], float], Iterable[tuple[float, str]]]
FundingRows = Mapping[str, list[tuple[float, float, float]]]  # symbol → (time, rate, mark)

DROP = object()  # abort the TCP connection (no close frame)
CLOSE = object()  # close the connection normally (close frame 1000)
GARBAGE = object()  # send one frame that is not JSON


def synthetic_market(rates: marketgen.Rates | None = None, *, hours: float = 24.0,
                     seed: int = 7) -> MarketSource:
    """Return a market of `engine.market.marketgen` frames starting a second before now."""
    chosen = rates or marketgen.Rates(book_per_s=10.0, kline_every_s=1.0, mark_every_s=1.0,
                                      ticker_every_s=2.0)

    def frames(symbols: tuple[str, ...], now: float) -> Iterable[tuple[float, str]]:
        for t, raw in marketgen.generate(symbols, start=now - 1.0, hours=hours, rates=chosen,
                                         seed=seed, history_minutes=0, higher_candles=0):
            if isinstance(raw, str):
                yield t, raw

    return frames


class _Dropped(Exception):
    """The connection was aborted on purpose (`DROP` or `drop_after_frames`)."""


class FakeBinance:
    """A local Binance USD-M: REST and websocket on 127.0.0.1, with injectable faults."""

    def __init__(self, *, page: int = 1500, poison_after: float | None = None,
                 candles: CandleSource | None = candle, market: MarketSource | None = None,
                 symbols: Iterable[str] = tuple(BASES), funding: FundingRows | None = None,
                 clock: Clock | None = None) -> None:
        self.page = page  # most rows one REST answer holds
        # every price of a candle (and funding rate) at or after this is x10: look-ahead tests
        self.poison_after = poison_after
        self._candles = candles  # None: a market without candle history (klines answer [])
        self.market = market
        self.symbols = list(symbols)  # listed by exchangeInfo; klines of others answer -1121
        self.funding = funding  # fixed funding rows instead of the synthetic ones
        self.clock: Clock = clock or LiveClock()
        self.faults = Faults()
        self.requests: list[tuple[str, dict[str, str]]] = []  # REST (path, query), in order
        self.weight = 0  # request weight used, sent back as X-MBX-USED-WEIGHT-1M
        self.connections = 0  # websocket connections accepted
        self.refused = 0  # websocket handshakes refused (faults.refuse_handshakes)
        self.paths: list[str] = []  # each websocket connection's request path
        self.outbox: asyncio.Queue[object] = asyncio.Queue()
        self.rest_url = self.ws_url = ""
        self._runner: web.AppRunner | None = None
        self._ws: Server | None = None

    # ------------------------------------------------------------ life cycle

    async def start(self, rest_port: int = 0, ws_port: int = 0) -> None:
        """Start serving REST and websocket on 127.0.0.1 (a port of 0: a free one)."""
        app = web.Application()
        app.router.add_get("/fapi/v1/klines", self._klines)
        app.router.add_get("/fapi/v1/markPriceKlines", self._klines)
        app.router.add_get("/fapi/v1/fundingRate", self._funding)
        app.router.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        app.router.add_get("/fapi/v1/leverageBracket", self._leverage_bracket)
        app.router.add_get("/fapi/v1/time", self._time)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", rest_port).start()
        self.rest_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._ws = await serve(self._stream, "127.0.0.1", ws_port,
                               process_request=self._handshake)
        self.ws_url = f"ws://127.0.0.1:{self._ws.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        """Stop serving (open websocket connections are closed)."""
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()
            self._ws = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBinance:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def candle(self, symbol: str, open_time: float, seconds: int = 60) -> Candle:
        """Return (open, high, low, close, volume) of the candle served for `open_time`."""
        source = self._candles or candle
        o, hi, lo, c, v = source(symbol, open_time, seconds)
        if self.poison_after is not None and open_time >= self.poison_after:
            o, hi, lo, c = o * 10, hi * 10, lo * 10, c * 10
        return o, hi, lo, c, v

    # ------------------------------------------------------------ REST

    async def _guard(self, request: web.Request, weight: int) -> web.StreamResponse | None:
        """Log the request, wait the injected delay, and return its refusal if one is due."""
        self.requests.append((request.path, dict(request.query)))
        if self.faults.delay_seconds > 0:
            await self.clock.sleep(self.faults.delay_seconds)
        refusal = self.faults.rest_refusal()
        if refusal is not None:
            status, headers = refusal
            body = ({"code": -1003, "msg": "Too many requests; please use the websocket."}
                    if status != 503 else {"code": -1001, "msg": "Internal error."})
            return web.json_response(body, status=status, headers=headers)
        self.weight += weight
        return None

    def _answer(self, body: object) -> web.Response:
        return web.Response(body=orjson.dumps(body), content_type="application/json",
                            headers={"X-MBX-USED-WEIGHT-1M": str(self.weight)})

    @staticmethod
    def _bad(code: int, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=400)

    async def _klines(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        limit = min(int(q.get("limit", 500)), self.page)
        if (bad := await self._guard(request, 1 if limit < 100 else 2 if limit < 500 else 5)):
            return bad
        symbol = q.get("symbol", "")
        if symbol not in self.symbols:
            return self._bad(-1121, "Invalid symbol.")
        seconds = INTERVALS.get(q.get("interval", ""))
        if seconds is None:
            return self._bad(-1120, "Invalid interval.")
        if self._candles is None:
            return self._answer([])
        now = self.clock.time()
        end = min(int(q["endTime"]) / 1000 if "endTime" in q else now, now)
        if "startTime" in q:
            first = math.ceil(int(q["startTime"]) / 1000 / seconds) * seconds
        else:  # the newest `limit` candles up to `end`
            first = (math.floor(end / seconds) - limit + 1) * seconds
        mark = request.path.endswith("markPriceKlines")
        rows = []
        for i in range(limit):
            t = first + i * seconds
            if t > end:
                break
            if self.faults.kline_missing(t):
                continue
            rows.append(kline_row(t, seconds, self.candle(symbol, t, seconds), mark=mark))
        return self._answer(rows)

    async def _funding(self, request: web.Request) -> web.StreamResponse:
        if (bad := await self._guard(request, 1)):
            return bad
        q = request.query
        symbol = q.get("symbol", "")
        limit = min(int(q.get("limit", 100)), 1000)
        now = self.clock.time()
        end = min(int(q["endTime"]) / 1000 if "endTime" in q else now, now)
        start = int(q["startTime"]) / 1000 if "startTime" in q else None
        if self.funding is not None:
            rows = [(t, r, m) for t, r, m in self.funding.get(symbol, [])
                    if (start is None or t >= start) and t <= end]
        else:
            since = start if start is not None else end - limit * FUNDING_EVERY
            first = math.ceil(since / FUNDING_EVERY) * FUNDING_EVERY
            rows = []
            for t in range(first, math.floor(end) + 1, FUNDING_EVERY):
                rate = funding_rate(symbol, t)
                if self.poison_after is not None and t >= self.poison_after:
                    rate *= 10
                rows.append((t, rate, price(symbol, t)))
        rows = rows[:limit] if start is not None else rows[-limit:]
        return self._answer([funding_row(symbol, int(t), r, m) for t, r, m in rows])

    async def _exchange_info(self, request: web.Request) -> web.StreamResponse:
        if (bad := await self._guard(request, 1)):
            return bad
        return self._answer(exchange_info(self.symbols, int(self.clock.time() * 1000)))

    async def _leverage_bracket(self, request: web.Request) -> web.StreamResponse:
        if (bad := await self._guard(request, 1)):
            return bad
        symbol = request.query.get("symbol")
        if symbol is not None:
            return self._answer(leverage_brackets(symbol))
        return self._answer([leverage_brackets(s) for s in self.symbols])

    async def _time(self, request: web.Request) -> web.StreamResponse:
        if (bad := await self._guard(request, 1)):
            return bad
        return self._answer({"serverTime": int(self.clock.time() * 1000)})

    # ------------------------------------------------------------ websocket

    def send(self, *frames: str | object) -> None:
        """Queue frames (or DROP, CLOSE, GARBAGE) for the websocket connection, in order."""
        for f in frames:
            self.outbox.put_nowait(f)

    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.faults.refuse_handshakes > 0:
            self.faults.refuse_handshakes -= 1
            self.refused += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy, try later\n")
        return None

    async def _stream(self, ws: ServerConnection) -> None:
        self.connections += 1
        path = ws.request.path if ws.request else ""
        self.paths.append(path)
        wanted = {s for s in path.partition("streams=")[2].split("/") if s}
        link = _Link(ws, self.faults)
        tasks = [asyncio.ensure_future(self._from_outbox(link)),
                 asyncio.ensure_future(ws.wait_closed())]
        if self.market is not None:
            tasks.append(asyncio.ensure_future(self._from_market(link, wanted)))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            # the peer going away ends a send with ConnectionClosed: collected, not raised
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _from_outbox(self, link: _Link) -> None:
        while True:
            item = await self.outbox.get()
            if item is DROP:
                link.drop()
            elif item is CLOSE:
                await link.ws.close()
                return
            elif item is GARBAGE:
                await link.ws.send(GARBAGE_FRAME)
            else:
                await link.send(str(item))

    async def _from_market(self, link: _Link, wanted: set[str]) -> None:
        assert self.market is not None
        symbols = tuple(sorted({s.split("@")[0].upper() for s in wanted}))
        for t, raw in self.market(symbols, self.clock.time()):
            if orjson.loads(raw)["stream"] not in wanted or self.faults.in_gap(t):
                continue
            if t > self.clock.time():
                await self.clock.sleep_until(t)  # a market's pace
            await link.send(raw)


class _Link:
    """One websocket connection: counts what it sent and applies the frame faults."""

    __slots__ = ("faults", "sent", "ws")

    def __init__(self, ws: ServerConnection, faults: Faults) -> None:
        self.ws, self.faults, self.sent = ws, faults, 0

    async def send(self, raw: str) -> None:
        self.sent += 1
        f = self.faults
        if f.garbage_every and self.sent % f.garbage_every == 0:
            await self.ws.send(GARBAGE_FRAME)
        await self.ws.send(raw)
        if f.drop_after_frames is not None and self.sent >= f.drop_after_frames:
            f.drop_after_frames = None
            self.drop()

    def drop(self) -> None:
        """Abort the TCP connection: no close frame, as a network failure looks."""
        self.ws.transport.abort()
        raise _Dropped
