"""The snapshot's running indicators: kept between snapshots, equal to those computed afresh."""

from __future__ import annotations

import math

from engine.events import BookTicker
from engine.market import indicators as ind
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.snapshot import take_snapshot
from engine.settings import FeedSettings
from tests.market.test_book import T, candle


def test_snapshot_indicators_kept_running_equal_those_computed_afresh() -> None:
    from engine.market.snapshot import IndicatorCache, window_start

    settings = FeedSettings(symbols=("BTCUSDT",), timeframes=("15m",), indicator_candles=60)
    book, store, cache = PriceBook(), CandleStore(), IndicatorCache()
    rows = [candle(i, close=100 + math.sin(i / 5) * 3 + i / 50) for i in range(400)]
    store.merge("BTCUSDT", rows[:100])
    for minute in range(100, 400):
        if minute != 250:  # a hole, backfilled 20 minutes later: the window starts again
            store.merge("BTCUSDT", [rows[minute]])
        if minute == 270:
            store.merge("BTCUSDT", [rows[250]])
        book.apply(BookTicker("BTCUSDT", 99.0, 1.0, 99.2, 1.0, T, recv_time=T + 60 * minute))
        now = T + 60 * minute + 1
        kept = take_snapshot(book, store, settings, now=now, cache=cache)
        afresh = take_snapshot(book, store, settings, now=now)
        assert kept.to_dict() == afresh.to_dict()
    # the window: from the newest multiple of 60 minutes at least 60 candles back
    first = window_start(T + 60 * 399, 60, 60)
    closes = store.arrays("BTCUSDT").close[-(int(T + 60 * 399 - first) // 60 + 1):]
    assert kept.symbols["BTCUSDT"].indicators["1m"]["ema20"] == ind.ema(closes, 20)[-1]
    assert 60 <= len(closes) < 120


def _same(a: dict, b: dict) -> bool:
    """Equal dicts, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x)
                   and math.isnan(y)) for x, y in zip(a.values(), b.values(), strict=True))


def test_the_indicator_cache_restarts_on_a_changed_candle_and_takes_a_nan_window_afresh() -> None:
    import numpy as np

    from engine.market.candles import OHLCV
    from engine.market.snapshot import IndicatorCache

    rng = np.random.default_rng(7)
    close = 100 + np.cumsum(rng.normal(0, 1, 300))
    cols = np.vstack([np.arange(300) * 60.0, close, close + 1, close - 1, close, np.ones(300)])
    cache, key = IndicatorCache(), ("BTCUSDT", "1m")

    def check(columns: np.ndarray, n: int) -> None:
        window = OHLCV(*(c[:n].copy() for c in columns))
        expected = (ind.summary_full if np.isnan(columns[2:5, :n]).any() else ind.summary)(
            window.high, window.low, window.close)
        assert _same(cache.values(key, window), expected)

    for n in (60, 61, 61, 75, 140):  # new candles, none, more
        check(cols, n)
    changed = cols.copy()
    changed[4, 100] += 0.5  # a candle already fed changes: the window starts again
    check(changed, 140)
    check(changed, 150)
    nan = changed.copy()
    nan[4, 155] = np.nan  # a NaN among the new candles: computed afresh
    check(nan, 160)
    check(changed, 170)  # the NaN replaced: running again, equal to afresh
    check(changed, 171)
