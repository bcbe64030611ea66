"""A local Binance USD-M REST server of synthetic history, for the backtest's tests and bench.

Serves `/fapi/v1/klines`, `/fapi/v1/markPriceKlines`, `/fapi/v1/fundingRate` and
`/fapi/v1/exchangeInfo` in Binance's shapes (klines as arrays of strings, funding as objects) on
127.0.0.1, from a seeded, deterministic price path: the same (symbol, minute) always gives the
same candle. Like Binance it returns at most `limit` rows (capped by `page`), answers every
request with `X-MBX-USED-WEIGHT-1M`, and can answer the first `fail_first` requests with 429 and
`Retry-After`. `poison_after` multiplies every price of a candle opening at or after it by 10
(the look-ahead test). Written by hand from Binance's documented shapes, not recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BASES = {"BTCUSDT": 97_000.0, "ETHUSDT": 3_400.0, "SOLUSDT": 180.0, "BNBUSDT": 650.0,
         "XRPUSDT": 2.2, "DOGEUSDT": 0.32}
FUNDING_EVERY = 8 * 3600


def _price(symbol: str, t: float) -> float:
    base = BASES.get(symbol, 50.0)
    seed = sum(map(ord, symbol))
    wave = math.sin(t / 5400 + seed) * 0.02 + math.sin(t / 797 + seed * 2) * 0.004
    return base * (1 + wave + 0.01 * math.sin(t / 86_400))


@dataclass
class FakeBinance:
    """The server's behaviour and what it saw."""

    page: int = 1500
    fail_first: int = 0  # answer this many requests with 429 + Retry-After first
    retry_after: str = "1"
    poison_after: float | None = None
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    weight: int = 0
    url: str = ""
    _runner: Any = None

    def candle(self, symbol: str, open_time: float, seconds: int = 60) -> list[float]:
        o, c = _price(symbol, open_time), _price(symbol, open_time + seconds)
        mid = _price(symbol, open_time + seconds / 2)
        hi, lo = max(o, c, mid) * 1.0004, min(o, c, mid) * 0.9996
        if self.poison_after is not None and open_time >= self.poison_after:
            o, hi, lo, c = o * 10, hi * 10, lo * 10, c * 10
        return [o, hi, lo, c, 100.0 + (open_time // 60) % 17]

    async def _guard(self, request: web.Request, weight: int) -> web.StreamResponse | None:
        self.requests.append((request.path, dict(request.query)))
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.json_response({"code": -1003, "msg": "Too many requests"}, status=429,
                                     headers={"Retry-After": self.retry_after})
        self.weight += weight
        return None

    def _headers(self) -> dict[str, str]:
        return {"X-MBX-USED-WEIGHT-1M": str(self.weight)}

    async def klines(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        limit = min(int(q.get("limit", 500)), self.page)
        if (bad := await self._guard(request, 1 if limit < 100 else 2 if limit < 500 else 5)):
            return bad
        symbol = q["symbol"]
        if symbol not in BASES:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        seconds = {"1m": 60, "15m": 900, "1h": 3600, "4h": 14_400}[q.get("interval", "1m")]
        end = int(q["endTime"]) // 1000 if "endTime" in q else None
        if "startTime" in q:
            first = -(-int(q["startTime"]) // 1000 // seconds) * seconds
            times = [first + i * seconds for i in range(limit)]
        else:
            last = (end // seconds) * seconds
            times = [last - (limit - 1 - i) * seconds for i in range(limit)]
        rows = []
        for t in times:
            if end is not None and t > end:
                break
            o, h, lo, c, v = self.candle(symbol, t, seconds)
            if request.path.endswith("markPriceKlines"):
                o, h, lo, c, v = o * 1.0001, h * 1.0001, lo * 1.0001, c * 1.0001, 0.0
            rows.append([t * 1000, f"{o:.6f}", f"{h:.6f}", f"{lo:.6f}", f"{c:.6f}", f"{v:.3f}",
                         (t + seconds) * 1000 - 1, "0", 10, "0", "0", "0"])
        return web.json_response(rows, headers=self._headers())

    async def funding(self, request: web.Request) -> web.StreamResponse:
        if (bad := await self._guard(request, 1)):
            return bad
        q = request.query
        symbol = q["symbol"]
        start, end = int(q["startTime"]) // 1000, int(q["endTime"]) // 1000
        limit = min(int(q.get("limit", 100)), 1000)
        first = -(-start // FUNDING_EVERY) * FUNDING_EVERY
        rows = []
        for t in range(first, end + 1, FUNDING_EVERY):
            if len(rows) >= limit:
                break
            rate = 0.0001 * (1 + math.sin(t / 100_000 + len(symbol)))
            if self.poison_after is not None and t >= self.poison_after:
                rate *= 10
            rows.append({"symbol": symbol, "fundingTime": t * 1000,
                         "fundingRate": f"{rate:.8f}", "markPrice": f"{_price(symbol, t):.6f}"})
        return web.json_response(rows, headers=self._headers())

    async def exchange_info(self, request: web.Request) -> web.StreamResponse:
        if (bad := await self._guard(request, 1)):
            return bad
        return web.json_response({"symbols": [{"symbol": s, "status": "TRADING"}
                                              for s in BASES]}, headers=self._headers())

    async def start(self, port: int = 0) -> str:
        """Start serving on 127.0.0.1 (`port`, 0 = a free one); return the base URL."""
        app = web.Application()
        app.router.add_get("/fapi/v1/klines", self.klines)
        app.router.add_get("/fapi/v1/markPriceKlines", self.klines)
        app.router.add_get("/fapi/v1/fundingRate", self.funding)
        app.router.add_get("/fapi/v1/exchangeInfo", self.exchange_info)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()



def main() -> None:
    """Serve the synthetic history until Ctrl-C: `python -m engine.market.fakebinance [port]`."""
    import asyncio
    import sys

    async def serve() -> None:
        fake = FakeBinance()
        await fake.start(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
        print(f"serving synthetic Binance USD-M history at {fake.url}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
