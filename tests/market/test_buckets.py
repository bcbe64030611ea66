"""The higher timeframes kept incrementally equal a full resample of the held 1m candles."""

from __future__ import annotations

import random

import numpy as np
import pytest

from engine.events import Kline
from engine.market.buckets import resample_columns
from engine.market.candles import Candle, CandleStore, resample

T = 1_767_225_600  # 2026-01-01 00:00 UTC, a multiple of 4h
TIMEFRAMES = ("15m", "1h", "4h")


def _candle(rng: random.Random, minute: int) -> Candle:
    o, c = rng.uniform(90, 110), rng.uniform(90, 110)
    return Candle(float(T + 60 * minute), o, max(o, c) + rng.random(), min(o, c) - rng.random(),
                  c, rng.uniform(0, 10))


def _kline(c: Candle, closed: bool = True) -> Kline:
    return Kline("BTCUSDT", "1m", c.open_time, c.open_time + 59.999, c.open, c.high, c.low,
                 c.close, c.volume, closed, c.open_time + 60.0, recv_time=c.open_time + 60.0)


def _full(store: CandleStore, tf: str, limit: int | None) -> np.ndarray:
    """What the store held before incremental timeframes: resample the whole 1m history."""
    want = np.asarray(store.candles("BTCUSDT", tf, limit), dtype=np.float64)
    return want.reshape(-1, 6)


def _check(store: CandleStore) -> None:
    for tf in TIMEFRAMES:
        for limit in (None, 7):
            got = np.column_stack(store.arrays("BTCUSDT", tf, limit)).reshape(-1, 6)
            want = _full(store, tf, limit)
            # Exact equality, volumes included (summed left to right in both).
            assert got.shape == want.shape and np.array_equal(got, want), (tf, limit)


@pytest.mark.parametrize("seed", range(6))
def test_incremental_timeframes_equal_a_full_resample_over_random_series_with_holes(
        seed: int) -> None:
    rng = random.Random(seed)
    store = CandleStore(max_candles=rng.choice((50, 300, 1000)))  # small: the oldest fall off
    minute = rng.randrange(0, 240)
    skipped: list[int] = []
    for step in range(2000):
        roll = rng.random()
        if roll < 0.06:  # a hole: minutes that never arrived live
            gap = rng.choice((1, 3, 20, 300))
            skipped.extend(range(minute, minute + gap))
            minute += gap
        elif roll < 0.08 and skipped:  # a backfill fills part of an older hole
            fill = rng.sample(skipped, min(len(skipped), rng.randint(1, 30)))
            store.merge("BTCUSDT", [_candle(rng, m) for m in sorted(fill)])
            skipped = [m for m in skipped if m not in set(fill)]
        elif roll < 0.09:  # a batch of minutes at once (a replay catching up)
            batch = [_candle(rng, m) for m in range(minute, minute + rng.randint(2, 150))]
            store.merge("BTCUSDT", batch)
            minute += len(batch)
        else:
            c = _candle(rng, minute)
            store.apply_kline(_kline(c, closed=False))  # forming updates are not candles
            store.apply_kline(_kline(c))
            minute += 1
        if rng.random() < 0.12 or step % 97 == 0:  # read at random moments, not every minute
            _check(store)
    _check(store)


def test_a_full_series_drops_whole_buckets_and_recomputes_the_first_one() -> None:
    rng = random.Random(11)
    store = CandleStore(max_candles=20)  # fewer minutes than one 4h bucket
    for m in range(500):
        store.apply_kline(_kline(_candle(rng, m)))
        got = np.column_stack(store.arrays("BTCUSDT", "4h"))
        held = store.closed("BTCUSDT")
        assert len(held) == min(m + 1, 20)
        assert np.array_equal(got, np.asarray(resample(held, 14_400), dtype=np.float64))


def test_fetched_higher_candles_still_fill_only_the_older_buckets() -> None:
    rng = random.Random(5)
    store = CandleStore(max_candles=200)

    def fetched(k: int, price: float = 1.0) -> Candle:
        return Candle(float(T + 900 * k), price, price + 1, price - 0.5, price + 0.5, 3.0)

    for m in range(130, 900):
        store.apply_kline(_kline(_candle(rng, m)))
        if m == 200:
            store.merge_higher("BTCUSDT", "15m", [fetched(k) for k in range(-3, 10)])
        elif m % 15 == 0 and m > 200:  # each closed bucket sent again (a backtest stream)
            store.merge_higher("BTCUSDT", "15m", [fetched(m // 15 - 1, 2.0)])
        elif m == 500:  # an older one, then one replaced: the columns are rebuilt
            store.merge_higher("BTCUSDT", "15m", [fetched(-7), fetched(0, 5.0)])
        if m % 13 == 0:
            _check(store)
    _check(store)


def test_resample_columns_matches_resample() -> None:
    rng = random.Random(2)
    rows = [_candle(rng, m) for m in range(1000) if rng.random() > 0.1]
    cols = np.asarray(rows, dtype=np.float64).T.copy()
    for seconds in (900, 3600, 14_400, 86_400):
        assert np.array_equal(resample_columns(cols, seconds).T,
                              np.asarray(resample(rows, seconds), dtype=np.float64))
