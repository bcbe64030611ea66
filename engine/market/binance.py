"""Binance REST: closed klines for backfill and exchangeInfo filters, within the weight budget.

Every request first takes its weight from a per-minute budget (`rest_weight_per_minute`, kept
below Binance's IP limit), and the budget follows the `X-MBX-USED-WEIGHT-1M` header Binance
returns. 429 (rate limited) and 418 (IP banned) wait `Retry-After` seconds and retry; 5xx and
network errors retry with back-off; other 4xx are fatal for that request.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aiohttp
import orjson
import structlog

from engine.clock import Clock
from engine.market.candles import MINUTE, Candle, timeframe_seconds
from engine.retry import Backoff
from engine.settings import FeedSettings

log = structlog.get_logger("feed")

MAX_KLINES = {"futures": 1500, "spot": 1000}  # largest `limit` per klines request


class RestError(Exception):
    """A REST request that failed for good (after retries, or a client error)."""


def klines_weight(market: str, limit: int) -> int:
    """Return the request weight of one klines call (futures weight grows with `limit`)."""
    if market == "spot":
        return 2
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


class WeightBudget:
    """Request weight used in the current minute, shared by every REST call."""

    def __init__(self, clock: Clock, per_minute: int) -> None:
        self._clock = clock
        self.per_minute = per_minute
        self.used = 0
        self._window = -1
        self._lock = asyncio.Lock()

    def _roll(self) -> None:
        window = int(self._clock.time() // MINUTE)
        if window != self._window:
            self._window, self.used = window, 0

    async def acquire(self, weight: int) -> None:
        """Wait until `weight` fits in this minute's budget, then take it."""
        async with self._lock:
            while True:
                self._roll()
                if self.used + weight <= self.per_minute or self.used == 0:
                    self.used += weight
                    return
                next_window = (self._window + 1) * MINUTE
                log.info("feed.rest_budget_wait", used=self.used, wait_s=round(
                    next_window - self._clock.time(), 3))
                await self._clock.sleep_until(next_window)

    def observe(self, used_header: str | None) -> None:
        """Follow Binance's own count of the weight used this minute."""
        if used_header and used_header.isdigit():
            self._roll()
            self.used = max(self.used, int(used_header))


class BinanceRest:
    """A small Binance market-data REST client on aiohttp."""

    def __init__(self, settings: FeedSettings, clock: Clock, *,
                 session: aiohttp.ClientSession | None = None, max_retries: int = 5) -> None:
        self.settings = settings
        self.clock = clock
        self.base = settings.rest_url.rstrip("/")
        self.prefix = "/fapi/v1" if settings.market == "futures" else "/api/v3"
        self.budget = WeightBudget(clock, settings.rest_weight_per_minute)
        self.max_retries = max_retries
        self._session = session
        self._own_session = session is None
        self.requests = 0

    async def _session_get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.settings.rest_timeout_seconds)
            self._session = aiohttp.ClientSession(timeout=timeout)
            self._own_session = True
        return self._session

    async def close(self) -> None:
        """Close the HTTP session if this client opened it."""
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def get(self, path: str, params: dict[str, Any], weight: int) -> Any:
        """GET `path` with `params`, honouring the budget, 429/418 and Retry-After."""
        url = f"{self.base}{self.prefix}/{path}"
        session = await self._session_get()
        backoff = Backoff(1.0, self.settings.max_backoff_seconds)  # 0.5-1 s, 1-2 s, ... jittered
        for _ in range(self.max_retries + 1):
            await self.budget.acquire(weight)
            self.requests += 1
            try:
                async with session.get(url, params=params) as resp:
                    self.budget.observe(resp.headers.get("X-MBX-USED-WEIGHT-1M"))
                    body = await resp.read()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                delay = backoff.next_delay()
                log.warning("feed.rest_error", path=path, error=repr(exc),
                            retry_in_s=round(delay, 3))
                await self.clock.sleep(delay)
                continue
            if status == 200:
                return orjson.loads(body)
            if status in (418, 429):
                wait = _retry_after(retry_after, default=MINUTE)
                log.warning("feed.rest_rate_limited", path=path, status=status, retry_in_s=wait)
                await self.clock.sleep(wait)
                continue
            if status >= 500:
                delay = backoff.next_delay()
                log.warning("feed.rest_error", path=path, status=status, retry_in_s=round(delay, 3))
                await self.clock.sleep(delay)
                continue
            raise RestError(f"GET {path} -> {status}: {body[:200]!r}")
        raise RestError(f"GET {path}: gave up after {self.max_retries + 1} attempts")

    async def server_time(self) -> float:
        """Return Binance's clock (epoch seconds) from `/time`."""
        return float((await self.get("time", {}, 1))["serverTime"]) / 1000.0

    async def klines(self, symbol: str, interval: str = "1m", *, start: float | None = None,
                     end: float | None = None, limit: int = 500,
                     closed_only: bool = False) -> list[Candle]:
        """Return candles of `interval` whose open time lies in [start, end] (newest `limit`).

        `closed_only` keeps the candles the exchange has closed: closeTime before Binance's
        server time read just before the request, never the local clock.
        """
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start is not None:
            params["startTime"] = int(start * 1000)
        if end is not None:
            params["endTime"] = int(end * 1000)
        server_ms = await self.server_time() * 1000 if closed_only else math.inf
        rows = await self.get("klines", params, klines_weight(self.settings.market, limit))
        return [_candle(r) for r in rows if float(r[6]) < server_ms]

    async def funding_history(self, symbol: str, start: float,
                              end: float) -> list[tuple[float, float, float]]:
        """Return (funding time, rate, mark price; NaN if absent) of the funding times in
        (start, end], oldest first (`/fapi/v1/fundingRate`)."""
        params = {"symbol": symbol, "startTime": int(start * 1000) + 1,
                  "endTime": int(end * 1000), "limit": 1000}
        rows = await self.get("fundingRate", params, 1)
        out = [(float(r["fundingTime"]) / 1000.0, float(r["fundingRate"]),
                float(r.get("markPrice") or "nan")) for r in rows]
        return sorted(x for x in out if start < x[0] <= end)

    async def closed_klines(self, symbol: str, first: float, last: float,
                            interval: str = "1m") -> list[Candle]:
        """Return every closed candle with open time in [first, last], paging as needed."""
        step = timeframe_seconds(interval)
        page = MAX_KLINES[self.settings.market]
        last = min(last, self.clock.time() // step * step - step)  # the open candle is not closed
        out: list[Candle] = []
        cursor = first
        while cursor <= last:
            limit = min(page, int((last - cursor) // step) + 1)
            got = await self.klines(symbol, interval, start=cursor, end=last, limit=limit,
                                    closed_only=True)
            rows = [r for r in got if cursor <= r.open_time <= last]
            if rows:
                out.extend(rows)
                cursor = rows[-1].open_time + step
            if len(got) < limit or not rows:
                break  # Binance has nothing more in this range
        return out

    async def exchange_info(self, symbols: tuple[str, ...] | None = None
                            ) -> dict[str, dict[str, Any]]:
        """Return per symbol: step_size, tick_size, min_notional (floats) from exchangeInfo.

        Maintenance margins come from the brackets in settings: exchangeInfo's
        `maintMarginPercent` is a legacy field (2.5 for every symbol) and is never read.
        """
        weight = 1 if self.settings.market == "futures" else 20
        data = await self.get("exchangeInfo", {}, weight)
        return parse_exchange_info(data, symbols)


def parse_exchange_info(data: dict[str, Any], symbols: tuple[str, ...] | None = None
                        ) -> dict[str, dict[str, Any]]:
    """Extract step size, tick size and minimum notional per symbol from an exchangeInfo body."""
    out: dict[str, dict[str, Any]] = {}
    for entry in data.get("symbols", []):
        name = entry.get("symbol")
        if symbols is not None and name not in symbols:
            continue
        filters = {f.get("filterType"): f for f in entry.get("filters", [])}
        info: dict[str, float] = {}
        if "LOT_SIZE" in filters:
            info["step_size"] = float(filters["LOT_SIZE"]["stepSize"])
        if "PRICE_FILTER" in filters:
            info["tick_size"] = float(filters["PRICE_FILTER"]["tickSize"])
        notional = filters.get("MIN_NOTIONAL") or filters.get("NOTIONAL") or {}
        for key in ("notional", "minNotional"):
            if key in notional:
                info["min_notional"] = float(notional[key])
                break
        out[name] = info
    return out


def _retry_after(value: str | None, default: float) -> float:
    try:
        wait = float(value) if value is not None else default
    except ValueError:
        return default
    return wait if math.isfinite(wait) and wait >= 0 else default


def _candle(row: list[Any]) -> Candle:
    # [open time ms, open, high, low, close, volume, close time ms, quote volume, ...]
    return Candle(row[0] / 1000.0, float(row[1]), float(row[2]), float(row[3]),
                  float(row[4]), float(row[5]))
