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
import os
import sys
import tempfile
from collections.abc import Sequence

from engine.app.args import Parser
from engine.market.fakebinance import FakeBinance
from engine.market.marketgen import DEFAULT_START, PROFILES
from engine.market.synthhistory import SyntheticHistory
from engine.settings import Settings, SettingsError, TraderSettings, load_settings

SEED = 7  # the committed seed of the demo's market
DAY = 86_400
RANDOM_TRADER = TraderSettings(name="random", strategy="random")


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
    from engine import redact
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
    redact.register_configured(secrets.values(), base, os.environ)  # + *_env settings

    async def _run(cache_dir: str) -> int:
        probe = demo_settings(base, "http://127.0.0.1:0", cache_dir)
        start, end, first, last = window(probe, args.hours)
        history = SyntheticHistory(probe.feed.symbols, first, last, args.seed)
        # The one fake Binance, serving this history (thin: any server of these shapes would do).
        server = FakeBinance(candles=history.serve, funding=history.funding_rows(),
                             symbols=tuple(history.paths))
        await server.start()
        url = server.rest_url
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
