"""The snapshot's running indicators: kept between snapshots, equal to those computed afresh."""

from __future__ import annotations

import math

import pytest

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


@pytest.mark.parametrize("fetched", [True, False])
def test_higher_timeframes_kept_between_snapshots_equal_those_computed_afresh(
        fetched: bool) -> None:
    """A full 1m series (its oldest minutes dropping), holes backfilled, with or without fetched
    15m/4h candles arriving as their buckets close (a little off the 1m candles' resample, as an
    exchange's may be) and now and then an older one corrected, snapshots at every minute: kept
    and afresh are equal."""
    import random

    from engine.market.candles import Candle
    from engine.market.candles import resample as exact
    from engine.market.snapshot import IndicatorCache

    def resample(candles: list[Candle], seconds: int) -> list[Candle]:
        return [c._replace(close=c.close * (1 + 1e-6)) for c in exact(candles, seconds)]

    rng = random.Random(11)
    settings = FeedSettings(symbols=("BTCUSDT",), timeframes=("15m", "4h"),
                            indicator_candles=60, max_candles=300)
    book, store, cache = PriceBook(), CandleStore(settings), IndicatorCache()
    price = 100.0
    rows = []
    for i in range(-2400, 1500):
        price *= 1 + rng.gauss(0, 0.002)
        rows.append(Candle(T + 60 * i, price, price * 1.001, price * 0.999, price,
                           rng.random()))
    for tf, seconds in (("15m", 900), ("4h", 14_400)) if fetched else ():  # fetched history
        store.merge_higher("BTCUSDT", tf, [c for c in resample(rows[:2400], seconds)
                                           if c.open_time + seconds <= T])
    store.merge("BTCUSDT", rows[2100:2400])
    skipped: list[Candle] = []
    for k, row in enumerate(rows[2400:]):
        if rng.random() < 0.02:
            skipped.append(row)  # a hole, filled a few minutes later
        else:
            store.merge("BTCUSDT", [row])
        if skipped and rng.random() < 0.08:
            store.merge("BTCUSDT", [skipped.pop(0)])
        if fetched and rng.random() < 0.01:  # an older fetched 15m candle corrected
            old = T + 900 * rng.randrange(-100, 0)
            store.merge_higher("BTCUSDT", "15m", [Candle(old, price, price * 1.01, price * 0.99,
                                                         price * (1 + rng.gauss(0, 0.01)), 1.0)])
        minute = row.open_time + 60
        for tf, seconds in (("15m", 900), ("4h", 14_400)) if fetched else ():
            if minute % seconds == 0:  # the closed bucket, as a backtest stream sends it
                store.merge_higher("BTCUSDT", tf, resample(rows[2400 + k + 1 - seconds // 60:
                                                                 2400 + k + 1], seconds))
        book.apply(BookTicker("BTCUSDT", price, 1.0, price, 1.0, T, recv_time=minute))
        kept = take_snapshot(book, store, settings, now=minute + 1, cache=cache)
        afresh = take_snapshot(book, store, settings, now=minute + 1)
        assert kept.to_dict() == afresh.to_dict(), k
    assert cache.closed  # the higher timeframes were kept between snapshots


def test_the_1m_indicators_kept_from_the_store_columns_equal_the_window_afresh() -> None:
    """1m candles appended, a full series dropping its oldest inside the window, holes filled
    later (an edit: the window starts again), a NaN close (the window afresh while it holds it):
    at every minute the kept values equal those of the window computed afresh, and between
    edits only the new candles are fed."""
    import random

    import numpy as np

    from engine.market.candles import Candle
    from engine.market.snapshot import RECENT_CLOSES, IndicatorCache, window_start

    rng = random.Random(5)
    settings = FeedSettings(symbols=("BTCUSDT",), timeframes=("15m",), indicator_candles=60,
                            max_candles=100)
    book, store, cache = PriceBook(), CandleStore(settings), IndicatorCache()
    price, skipped, fed = 100.0, [], []
    for i in range(400):
        price *= 1 + rng.gauss(0, 0.003)
        row = Candle(T + 60 * i, price, price * 1.002, price * 0.998,
                     math.nan if i == 230 else price, 1.0)
        if 20 < i < 380 and rng.random() < 0.03:
            skipped.append(row)  # a hole, filled a few minutes later
        else:
            store.merge("BTCUSDT", [row])
        if skipped and rng.random() < 0.1:
            store.merge("BTCUSDT", [skipped.pop(0)])
        before = cache.minutes.get("BTCUSDT")
        n_before, edits = (before.n if before else 0), store.minutes("BTCUSDT")[1]
        book.apply(BookTicker("BTCUSDT", price, 1.0, price, 1.0, T, recv_time=T + 60 * i + 60))
        snap = take_snapshot(book, store, settings, now=T + 60 * i + 61, cache=cache)
        arrays = store.arrays("BTCUSDT")
        newest = float(arrays.open_time[-1])
        first = int(arrays.open_time.searchsorted(window_start(newest, 60, 60)))
        h, lo, c = arrays.high[first:], arrays.low[first:], arrays.close[first:]
        expected = (ind.summary_full if np.isnan(c).any() else ind.summary)(h, lo, c)
        expected["closed_until"] = newest + 60
        got = snap.symbols["BTCUSDT"]
        assert _same(dict(got.indicators["1m"]), expected), i
        assert np.array_equal(got.recent_closes["1m"], arrays.close[-RECENT_CLOSES:],
                              equal_nan=True)
        after = cache.minutes.get("BTCUSDT")
        if after is not None and after is before:  # kept: fed only the new candles
            fed.append(after.n - n_before)
            assert after.token == (edits, float(arrays.open_time[first]))
    assert len(fed) > 250 and set(fed) <= {0, 1}
    assert "BTCUSDT" in cache.minutes  # the NaN left the window: running again
