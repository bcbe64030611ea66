"""A hole between the higher-timeframe buckets fetched and those built from 1m: fetch it live.

The candle store notices the hole (`CandleStore.missing_bucket`); a live feed fetches the
missing buckets over REST after each backfill and logs `candles.missing_bucket_fetched`. A
replay cannot fetch: its snapshots withhold that timeframe's indicators and log
`candles.missing_bucket` (engine.market.snapshot) instead of computing over the gap.
"""

from __future__ import annotations

from typing import Any

import structlog

from engine.market.binance import BinanceRest
from engine.market.candles import timeframe_seconds

log = structlog.get_logger("feed")


async def fetch_missing_bucket(feed: Any, rest: BinanceRest, symbol: str, tf: str) -> None:
    """Fetch `tf`'s buckets missing before the first one `feed`'s 1m series covers whole."""
    hole = feed.candles.missing_bucket(symbol, tf)
    if hole is None:
        return
    seconds = timeframe_seconds(tf)
    first = feed.candles.closed(symbol)[0].open_time
    last = -(-int(first) // seconds) * seconds - seconds
    rows = await rest.klines(symbol, tf, start=hole, end=last,
                             limit=int((last - hole) // seconds) + 1)  # all closed: older than 1m
    feed.apply_backfill(symbol, tf, rows, feed.clock.time())
    log.info("candles.missing_bucket_fetched", symbol=symbol, timeframe=tf, open_time=hole,
             candles=len(rows))
