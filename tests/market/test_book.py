"""Price book, candle store and market snapshot: pure, no event loop."""

from __future__ import annotations

import dataclasses
import math

import orjson
import pytest

from engine.events import BookTicker, Kline, MarkPrice, Ticker24h
from engine.market.book import PriceBook
from engine.market.candles import Candle, CandleStore, resample, timeframe_seconds
from engine.market.snapshot import MarketSnapshot, take_snapshot
from engine.settings import FeedSettings

T = 1_767_225_600.0  # 00:00:00


def candle(i: int, close: float | None = None) -> Candle:
    c = 100.0 + i if close is None else close
    return Candle(T + 60 * i, c - 0.5, c + 1.0, c - 1.0, c, 10.0 + i)


def kl(i: int, closed: bool, symbol: str = "BTCUSDT") -> Kline:
    c = candle(i)
    return Kline(symbol, "1m", c.open_time, c.open_time + 59.999, c.open, c.high, c.low, c.close,
                 c.volume, closed, c.open_time + 60, c.open_time + 60.01)


# ---------------------------------------------------------------- price book


def test_quote_holds_every_price_with_receive_and_exchange_time() -> None:
    book = PriceBook()
    book.apply(BookTicker("BTCUSDT", 99.9, 1.0, 100.1, 2.0, event_time=T, recv_time=T + 0.05))
    book.apply(MarkPrice("BTCUSDT", 100.02, 100.01, 0.0001, T + 3600, T + 1, T + 1.02))
    book.apply(Ticker24h("BTCUSDT", 100.05, 2.5, 105.0, 95.0, 1000.0, 100_000.0, T + 2, T + 2.1))
    q = book.quote("BTCUSDT")
    assert q is not None
    assert (q.bid, q.ask, q.mark, q.index, q.funding_rate) == (99.9, 100.1, 100.02, 100.01, 0.0001)
    assert (q.last, q.change_pct, q.high_24h, q.low_24h) == (100.05, 2.5, 105.0, 95.0)
    assert (q.updated, q.exchange_time) == (T + 2.1, T + 2)
    assert q.age(T + 5.1) == pytest.approx(3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.bid = 1.0  # type: ignore[misc]


def test_reference_price_is_mark_then_mid_then_last() -> None:
    book = PriceBook()
    assert book.price("BTCUSDT") is None
    book.apply(kl(0, closed=False))
    assert book.price("BTCUSDT") == 100.0
    book.apply(BookTicker("BTCUSDT", 99.0, 1.0, 101.0, 1.0, T, T))
    assert book.price("BTCUSDT") == 100.0  # mid
    book.apply(MarkPrice("BTCUSDT", 100.5, 100.4, 0.0, T, T, T))
    assert book.price("BTCUSDT") == 100.5


def test_age_is_infinite_for_unknown_symbols_and_stale_lists_old_prices() -> None:
    book = PriceBook()
    book.apply(BookTicker("BTCUSDT", 1.0, 1.0, 1.1, 1.0, T, recv_time=T))
    book.apply(BookTicker("ETHUSDT", 1.0, 1.0, 1.1, 1.0, T, recv_time=T + 8))
    assert math.isinf(book.age("SOLUSDT", T))
    assert book.stale(T + 12, 10.0) == ["BTCUSDT"]
    assert book.stale(T + 12, 10.0, ("BTCUSDT", "ETHUSDT", "SOLUSDT")) == ["BTCUSDT", "SOLUSDT"]
    assert book.stale(T + 10, 10.0) == []  # exactly max age is still fresh


# ---------------------------------------------------------------- candles


def test_live_closed_klines_build_the_series_and_forming_is_kept_apart() -> None:
    store = CandleStore()
    assert store.apply_kline(kl(0, closed=False)) is False
    assert store.forming("BTCUSDT") == candle(0)
    assert store.closed("BTCUSDT") == []
    store.apply_kline(kl(0, closed=True))
    assert store.closed("BTCUSDT") == [candle(0)]
    assert store.forming("BTCUSDT") is None


def test_backfill_merge_fills_holes_without_duplicates() -> None:
    store = CandleStore()
    store.merge("BTCUSDT", [candle(i) for i in range(0, 5)])
    assert store.apply_kline(kl(8, closed=True)) is True  # 5, 6, 7 missing
    assert store.holes("BTCUSDT", T + 60 * 10) == [(T + 300, T + 420), (T + 540, T + 600)]
    added = store.merge("BTCUSDT", [candle(i) for i in range(3, 11)])  # overlaps both sides
    assert added == 5
    assert store.closed("BTCUSDT") == [candle(i) for i in range(11)]
    assert store.holes("BTCUSDT", T + 600) == []
    assert store.missing("BTCUSDT", T - 120, T + 660) == [(T - 120, T - 60), (T + 660, T + 660)]


def test_a_candle_already_held_is_not_replaced() -> None:
    store = CandleStore()
    store.apply_kline(kl(1, closed=True))
    assert store.merge("BTCUSDT", [candle(1, close=999.0)]) == 0
    assert store.closed("BTCUSDT")[0].close == 101.0


def test_series_keeps_only_the_newest_max_candles() -> None:
    assert CandleStore(FeedSettings(max_candles=123)).max_candles == 123
    store = CandleStore(max_candles=100)
    store.merge("BTCUSDT", [candle(i) for i in range(150)])
    closed = store.closed("BTCUSDT")
    assert len(closed) == 100 and closed[0] == candle(50)
    assert store.merge("BTCUSDT", [candle(10)]) == 0  # older than everything kept


def test_resample_aggregates_ohlcv_into_aligned_buckets() -> None:
    rows = [candle(i) for i in range(14, 31)]  # 00:14 .. 00:30
    out = resample(rows, timeframe_seconds("15m"))
    assert [c.open_time for c in out] == [T, T + 900, T + 1800]
    mid = out[1]  # 00:15 .. 00:29
    assert mid.open == candle(15).open and mid.close == candle(29).close
    assert mid.high == max(candle(i).high for i in range(15, 30))
    assert mid.low == min(candle(i).low for i in range(15, 30))
    assert mid.volume == sum(candle(i).volume for i in range(15, 30))


def test_fetched_higher_timeframe_candles_fill_only_what_the_1m_series_does_not_cover() -> None:
    store = CandleStore()
    store.merge("BTCUSDT", [candle(i) for i in range(20, 50)])  # 00:20 .. 00:49
    older = [Candle(T - 900, 1, 2, 0.5, 1.5, 5), Candle(T, 1, 2, 0.5, 1.5, 5),
             Candle(T + 900, 1, 2, 0.5, 1.5, 5)]
    store.merge_higher("BTCUSDT", "15m", older)
    got = store.candles("BTCUSDT", "15m")
    # 00:15 bucket is only partly covered by 1m (from 00:20): the fetched one is used.
    assert got[:3] == older
    assert got[3] == resample([candle(i) for i in range(30, 45)], 900)[0]
    assert got[-1].open_time == T + 2700  # the newest bucket is still filling


def test_arrays_are_cached_until_the_series_changes() -> None:
    store = CandleStore()
    store.merge("BTCUSDT", [candle(i) for i in range(3)])
    a = store.arrays("BTCUSDT")
    assert store.arrays("BTCUSDT") is a
    store.apply_kline(kl(3, closed=True))
    b = store.arrays("BTCUSDT")
    assert b is not a and b.close.tolist() == [100.0, 101.0, 102.0, 103.0]


# ---------------------------------------------------------------- snapshot


def _filled(settings: FeedSettings) -> tuple[PriceBook, CandleStore]:
    book, store = PriceBook(), CandleStore()
    for k, sym in enumerate(settings.symbols):
        store.merge(sym, [candle(i, close=100 + k + math.sin(i / 7) * 3) for i in range(300)])
        book.apply(BookTicker(sym, 99.0 + k, 1.0, 99.2 + k, 1.0, T, recv_time=T + 18_000))
    return book, store


def test_snapshot_is_immutable_and_flags_stale_symbols() -> None:
    settings = FeedSettings(symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"), timeframes=("15m",))
    book, store = _filled(settings)
    book.apply(MarkPrice("ETHUSDT", 100.1, 100.0, 0.0001, T, T, recv_time=T + 18_005))
    snap = take_snapshot(book, store, settings, now=T + 18_014)
    assert snap.stale == ("BTCUSDT", "SOLUSDT")
    assert snap.fresh() == ("ETHUSDT",)
    eth = snap.symbols["ETHUSDT"]
    assert eth.price == 100.1 and eth.age == pytest.approx(9.0) and not eth.stale
    assert eth.indicators["1m"]["close"] == store.closed("ETHUSDT")[-1].close
    assert eth.indicators["15m"]["ema20"] is not None
    assert len(eth.recent_closes["1m"]) == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.ts = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.symbols["BTCUSDT"] = eth  # type: ignore[index]
    with pytest.raises(TypeError):
        eth.indicators["1m"]["rsi14"] = 1.0  # type: ignore[index]


def test_snapshot_to_dict_is_deterministic_json_with_none_for_missing_values() -> None:
    settings = FeedSettings(symbols=("BTCUSDT", "ETHUSDT"))
    book, store = _filled(settings)
    a = take_snapshot(book, store, settings, now=T + 18_001)
    b = take_snapshot(book, store, settings, now=T + 18_001)
    assert isinstance(a, MarketSnapshot)
    da = a.to_dict()
    assert orjson.dumps(da) == orjson.dumps(b.to_dict())
    assert list(da) == ["ts", "stale", "symbols"]
    assert list(da["symbols"]) == ["BTCUSDT", "ETHUSDT"]
    btc = da["symbols"]["BTCUSDT"]
    assert btc["mark"] is None and btc["funding_rate"] is None  # never received
    assert list(btc["indicators"]) == ["1m", "15m", "4h"]
    assert list(btc["indicators"]["1m"]) == [
        "close", "ema20", "ema50", "sma20", "rsi14", "macd", "macd_signal", "macd_hist",
        "atr14", "bb_upper", "bb_mid", "bb_lower", "closed_until"]
    assert btc["indicators"]["4h"]["ema20"] is None  # 300 minutes: two 4h buckets


def test_snapshot_of_a_symbol_never_seen_is_stale_with_no_prices() -> None:
    settings = FeedSettings(symbols=("BTCUSDT",))
    snap = take_snapshot(PriceBook(), CandleStore(), settings, now=T)
    assert snap.stale == ("BTCUSDT",)
    d = snap.to_dict()["symbols"]["BTCUSDT"]
    assert d["price"] is None and d["age"] is None and d["indicators"]["1m"]["close"] is None
    orjson.dumps(d)  # JSON-able


def test_arrays_hold_exactly_what_candles_gives_for_every_timeframe_and_limit() -> None:
    import random

    import numpy as np

    rng = random.Random(3)
    store = CandleStore(3000)
    first = 1_767_225_600 - 7 * 60
    rows = []
    for i in range(4000):
        if rng.random() < 0.05:
            continue  # holes
        o, c = rng.uniform(90, 110), rng.uniform(90, 110)
        rows.append(Candle(float(first + 60 * i), o, max(o, c) + rng.random(),
                           min(o, c) - rng.random(), c, rng.uniform(0, 10)))
    store.merge("BTCUSDT", rows)  # more than it keeps: the newest 3,000
    fetched_start = first // 14_400 * 14_400
    store.merge_higher("BTCUSDT", "4h", [Candle(float(fetched_start - 14_400 * k), 1.0, 2.0, 0.5,
                                                1.5, 3.0) for k in range(5)])
    for tf in ("1m", "15m", "1h", "4h", "1d"):
        for limit in (None, 10, 500):
            got = np.column_stack(store.arrays("BTCUSDT", tf, limit))
            want = np.asarray(store.candles("BTCUSDT", tf, limit), dtype=np.float64)
            assert got.shape == want.shape and (got == want).all(), (tf, limit)
