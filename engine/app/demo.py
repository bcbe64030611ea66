"""`python run.py demo`: the arena's verdict offline, in well under a minute.

A backtest of the rule-based traders and a `random` trader (the null) over `--hours` (48) of a
synthetic market made from a committed seed (`engine.market.synthhistory`), served by an
in-process fake Binance on 127.0.0.1 that the backtest fetches its history from, as it would
from Binance. Everything else is the real engine: the replay, the cycles, risk, the broker, the
database (DATABASE_URL, or the embedded one) and a fresh arena of mode `backtest` each time, so
two demos with one seed print the same numbers. At the end, on stdout in every log format: the
leaderboard with 95 % CIs, P(A beats B) for every pair, the report's paths and the page's URL.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence

from aiohttp import web

from engine.app.args import Parser
from engine.market.fakebinance import FakeBinance
from engine.market.marketgen import DEFAULT_START, PROFILES
from engine.market.synthhistory import SyntheticHistory
from engine.settings import Settings, SettingsError, TraderSettings, load_settings

SEED = 7  # the committed seed of the demo's market
DAY = 86_400
RANDOM_TRADER = TraderSettings(name="random", strategy="random")


class SyntheticBinance(FakeBinance):
    """The fake Binance serving a `SyntheticHistory` (klines of any timeframe, funding)."""

    def __init__(self, history: SyntheticHistory) -> None:
        super().__init__()
        self.history = history

    async def klines(self, request: web.Request) -> web.StreamResponse:
        """Answer /fapi/v1/klines and /fapi/v1/markPriceKlines like Binance (arrays of strings)."""
        q = request.query
        limit = min(int(q.get("limit", 500)), self.page)
        if (bad := await self._guard(request, 1 if limit < 100 else 2 if limit < 500 else 5)):
            return bad
        symbol = q.get("symbol", "")
        if symbol not in self.history.paths:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        seconds = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14_400,
                   "1d": 86_400}.get(q.get("interval", "1m"))
        if seconds is None:
            return web.json_response({"code": -1120, "msg": "Invalid interval."}, status=400)
        end = int(q["endTime"]) // 1000 if "endTime" in q else self.history.last
        if "startTime" in q:
            first = -(-int(q["startTime"]) // 1000 // seconds) * seconds
            times = [first + i * seconds for i in range(limit)]
        else:
            last = (end // seconds) * seconds
            times = [last - (limit - 1 - i) * seconds for i in range(limit)]
        mark = request.path.endswith("markPriceKlines")
        rows = []
        for t in times:
            if t > end:
                break
            c = self.history.candle(symbol, t, seconds, mark=mark)
            if c is None:
                continue
            o, h, lo, cl, v = c
            rows.append([t * 1000, f"{o:.8f}", f"{h:.8f}", f"{lo:.8f}", f"{cl:.8f}", f"{v:.3f}",
                         (t + seconds) * 1000 - 1, "0", 10, "0", "0", "0"])
        return web.json_response(rows, headers=self._headers())

    async def funding(self, request: web.Request) -> web.StreamResponse:
        """Answer /fapi/v1/fundingRate like Binance (objects, rates as strings)."""
        if (bad := await self._guard(request, 1)):
            return bad
        q = request.query
        symbol = q.get("symbol", "")
        limit = min(int(q.get("limit", 100)), 1000)
        settled = self.history.funding(symbol, int(q["startTime"]) / 1000,
                                       int(q["endTime"]) / 1000)[:limit]
        rows = [{"symbol": symbol, "fundingTime": t * 1000, "fundingRate": f"{rate:.8f}",
                 "markPrice": f"{mark:.8f}"} for t, rate, mark in settled]
        return web.json_response(rows, headers=self._headers())

    async def exchange_info(self, request: web.Request) -> web.StreamResponse:
        """Answer /fapi/v1/exchangeInfo listing the synthetic symbols."""
        if (bad := await self._guard(request, 1)):
            return bad
        return web.json_response({"symbols": [{"symbol": s, "status": "TRADING"}
                                              for s in self.history.paths]},
                                 headers=self._headers())


def parser() -> Parser:
    p = Parser(
        prog="run.py demo",
        description="Offline: the rule-based traders and a random one on a synthetic market "
        "(a backtest against an in-process fake Binance); prints the leaderboard with CIs.")
    p.add_argument("--hours", type=_hours, default=48.0, metavar="H",
                   help="hours of market (default 48; at least 1)")
    p.add_argument("--seed", type=int, default=SEED, help=f"the market's seed (default {SEED})")
    p.add_argument("--config", metavar="PATH", help="settings file (default: ./settings.toml)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["json", "console"])
    return p


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of hours: {text!r}") from None
    if not 1 <= value <= 24 * 14:
        raise argparse.ArgumentTypeError(f"--hours must be 1 to 336, not {text}")
    return value


def demo_settings(settings: Settings, url: str, cache_dir: str) -> Settings:
    """Return the demo's settings: the rule-based traders and a random one, the fake's URL."""
    traders = [t for t in settings.traders if t.enabled and t.strategy != "llm"]
    if not any(t.strategy == "random" for t in traders):
        name = RANDOM_TRADER.name
        while any(t.name == name for t in traders):
            name += "_"
        traders.append(RANDOM_TRADER.model_copy(update={"name": name}))
    symbols = tuple(s for s in settings.feed.symbols if s in PROFILES) or tuple(PROFILES)
    feed = settings.feed.model_validate({
        **settings.feed.model_dump(), "market": "futures", "symbols": symbols,
        "futures_rest_url": url, "max_candles": settings.backtest.max_candles})
    backtest = settings.backtest.model_copy(update={"cache_dir": cache_dir})
    # Its page on a free port: a live engine may hold the configured one.
    control = settings.control.model_copy(update={"port": 0})
    return settings.model_copy(update={"feed": feed, "traders": tuple(traders),
                                       "backtest": backtest, "control": control})


def window(settings: Settings, hours: float) -> tuple[float, float, float, float]:
    """Return (start, end) of the demo's window and (first, last) of the market to make."""
    start = DEFAULT_START
    end = start + hours * 3600
    longest = max([60, *(_seconds(tf) for tf in settings.feed.timeframes)])
    warmup = max(settings.feed.backfill_candles * 60,
                 (settings.feed.backfill_higher_candles + 1) * longest)
    first = (start - warmup) // DAY * DAY - DAY
    return start, end, first, end + DAY


def _seconds(tf: str) -> int:
    from engine.market.candles import timeframe_seconds

    return timeframe_seconds(tf)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo from the command line; return the exit code."""
    from engine import logging as arena_logging
    from engine.app.backtest import Run, execute, run_sync
    from engine.app.preflight import UserError, check_strategies
    from engine.settings import Secrets
    from engine.web.control import page_url

    try:
        args = parser().parse_args(list(argv or ()))
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        base = load_settings(args.config)
    except SettingsError as exc:
        print(f"settings error: {exc}", file=sys.stderr)
        return 2
    secrets = Secrets.from_env()
    arena_logging.configure(args.log_level or base.engine.log_level,
                            args.log_format or base.engine.log_format)
    arena_logging.register_secrets(secrets.values())

    async def _run(cache_dir: str) -> int:
        probe = demo_settings(base, "http://127.0.0.1:0", cache_dir)
        start, end, first, last = window(probe, args.hours)
        history = SyntheticHistory(probe.feed.symbols, first, last, args.seed)
        server = SyntheticBinance(history)
        url = await server.start()
        try:
            settings = demo_settings(base, url, cache_dir)
            check_strategies(settings, args.config or "settings.toml")
            print(f"demo: {args.hours:g} h of a synthetic market (seed {args.seed}), traders "
                  f"{', '.join(t.name for t in settings.traders)}; history served by a fake "
                  f"Binance at {url}", flush=True)
            return await execute(Run(settings, secrets, start, end, now=end + 2 * DAY,
                                     page_url=page_url(base.control.host, base.control.port)
                                     if base.control.enabled else None))
        finally:
            await server.stop()

    with tempfile.TemporaryDirectory(prefix="arena-demo-") as cache_dir:
        try:
            return run_sync(_run(cache_dir))
        except UserError as exc:
            print(f"demo error: {exc}", file=sys.stderr)
            return 2
