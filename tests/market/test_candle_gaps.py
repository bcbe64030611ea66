"""No silent holes in higher timeframes: marketgen emits every closed bucket; the candle store
notices a missing fetched bucket; a replay withholds that timeframe's indicators (logging
`candles.missing_bucket` once) and a live feed fetches the bucket over REST."""

from __future__ import annotations

import itertools
import math

from structlog.testing import capture_logs

from engine.bus import Bus
from engine.clock import SimClock
from engine.market.binance import BinanceRest
from engine.market.book import PriceBook
from engine.market.candles import Candle, CandleStore
from engine.market.fakebinance import FakeBinance
from engine.market.feed import Feed
from engine.market.gaps import fetch_missing_bucket
from engine.market.marketgen import generate
from engine.market.snapshot import IndicatorCache, _indicators
from engine.settings import FeedSettings

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, as the sample
H4 = 14_400


def minutes(first: float, count: int, price: float = 100.0) -> list[Candle]:
    return [Candle(first + 60 * i, price, price + 1, price - 1, price + 0.5, 1.0)
            for i in range(count)]


def buckets(first: float, count: int, seconds: int) -> list[Candle]:
    return [Candle(first + seconds * i, 90.0, 91.0, 89.0, 90.5, 10.0) for i in range(count)]


def store_with_hole() -> CandleStore:
    """1m from 07:20 (the 04:00 4h bucket covered only partly); fetched 4h up to 00:00."""
    store = CandleStore()
    store.merge("BTCUSDT", minutes(START - 16 * 3600 - 40 * 60, 1000))  # from 07:20 the day before
    store.merge_higher("BTCUSDT", "4h", buckets(START - 105 * H4, 100, H4))  # ... to 00:00
    return store


def test_marketgen_emits_every_higher_bucket_so_the_timeframes_join() -> None:
    store = CandleStore()
    for _, record in generate(("BTCUSDT",), start=START, hours=0.01, seed=7):
        if not isinstance(record, dict):
            break
        rows = [Candle(*map(float, r)) for r in record["candles"]]
        if record["interval"] == "1m":
            store.merge("BTCUSDT", rows)
        else:
            store.merge_higher("BTCUSDT", record["interval"], rows)
    first_1m = store.closed("BTCUSDT")[0].open_time
    assert first_1m % H4 != 0  # the 1m history starts inside a 4h bucket: the hard case
    assert store.missing_bucket("BTCUSDT", "15m") is None
    assert store.missing_bucket("BTCUSDT", "4h") is None
    four_h = store.candles("BTCUSDT", "4h")
    assert [b.open_time - a.open_time for a, b in itertools.pairwise(four_h)] == [H4] * (
        len(four_h) - 1)


def test_the_store_names_the_first_missing_bucket() -> None:
    store = store_with_hole()
    assert store.missing_bucket("BTCUSDT", "4h") == START - 20 * 3600  # 04:00 the day before
    store.merge_higher("BTCUSDT", "4h", buckets(START - 20 * 3600, 1, H4))
    assert store.missing_bucket("BTCUSDT", "4h") is None
    assert store.missing_bucket("BTCUSDT", "15m") is None  # nothing fetched: nothing to join


def test_a_replay_withholds_the_timeframes_indicators_and_logs_the_hole_once() -> None:
    store, cache = store_with_hole(), IndicatorCache()
    with capture_logs() as logs:
        first, recent = _indicators(store, "BTCUSDT", "4h", 50, cache)
        again, _ = _indicators(store, "BTCUSDT", "4h", 50, cache)
    holes = [e for e in logs if e["event"] == "candles.missing_bucket"]
    assert len(holes) == 1 and holes[0]["timeframe"] == "4h"
    assert holes[0]["open_time"] == START - 20 * 3600
    assert first["closed_until"] is None and recent == ()
    assert all(v is None or (isinstance(v, float) and math.isnan(v))
               for k, v in first.items() if k != "closed_until")
    assert dict(again) == dict(first)
    # once the bucket is there, the indicators come back
    store.merge_higher("BTCUSDT", "4h", buckets(START - 20 * 3600, 1, H4))
    filled, _ = _indicators(store, "BTCUSDT", "4h", 50, cache)
    assert filled["closed_until"] is not None


async def test_a_live_feed_fetches_the_missing_bucket() -> None:
    fake = FakeBinance()
    await fake.start()
    url = fake.rest_url
    try:
        settings = FeedSettings(futures_rest_url=url, symbols=("BTCUSDT",))
        clock = SimClock(START)
        store = store_with_hole()
        feed = Feed(settings, Bus(), clock, PriceBook(), store)
        rest = BinanceRest(settings, clock)
        with capture_logs() as logs:
            await fetch_missing_bucket(feed, rest, "BTCUSDT", "4h")
        await rest.close()
    finally:
        await fake.stop()
    assert store.missing_bucket("BTCUSDT", "4h") is None
    fetched = [q for path, q in fake.requests if path.endswith("klines")]
    assert fetched == [{"symbol": "BTCUSDT", "interval": "4h",
                        "startTime": str(int((START - 20 * 3600) * 1000)),
                        "endTime": str(int((START - 20 * 3600) * 1000)), "limit": "1"}]
    assert [e["event"] for e in logs if e["event"].startswith("candles.")] == [
        "candles.missing_bucket_fetched"]
