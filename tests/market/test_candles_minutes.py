"""The candle store's cheap reads: the forming candle kept as its kline, the held 1m columns
with their edit count, and the higher timeframes' closed key."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from engine.market.candles import Candle, CandleStore
from tests.market.test_book import T, candle, kl


def test_forming_is_the_latest_update_as_a_candle_until_its_minute_closes() -> None:
    store = CandleStore()
    assert store.forming("BTCUSDT") is None
    store.apply_kline(kl(3, closed=False))
    update = msgspec.structs.replace(kl(3, closed=False), close=150.0, high=151.0)
    store.apply_kline(update)  # a later update of the same minute replaces it
    got = store.forming("BTCUSDT")
    assert type(got) is Candle
    assert got == Candle(T + 180, 102.5, 151.0, 102.0, 150.0, 13.0)
    store.apply_kline(kl(2, closed=True))  # an older minute closing leaves it forming
    assert store.forming("BTCUSDT") == got
    store.apply_kline(kl(3, closed=True))
    assert store.forming("BTCUSDT") is None
    assert store.closed("BTCUSDT") == [candle(2), candle(3)]


def test_minutes_is_a_read_only_view_of_the_held_candles_with_their_edits() -> None:
    store = CandleStore(100)
    assert store.minutes("BTCUSDT") is None
    store.merge("BTCUSDT", [candle(i) for i in range(5)])
    cols, edits = store.minutes("BTCUSDT")
    assert cols.shape == (6, 5) and edits == 0
    assert [Candle(*r) for r in cols.T.tolist()] == store.closed("BTCUSDT")
    with pytest.raises(ValueError):
        cols[4, 0] = 1.0
    store.apply_kline(kl(7, closed=True))  # appended: no edit
    assert store.minutes("BTCUSDT")[1] == 0
    store.merge("BTCUSDT", [candle(6)])  # a hole filled: an edit
    cols, edits = store.minutes("BTCUSDT")
    assert edits == 1 and cols[0].tolist() == [T + 60 * i for i in (0, 1, 2, 3, 4, 6, 7)]
    store.merge("BTCUSDT", [candle(i) for i in range(8, 200)])  # full: the oldest drop, no edit
    cols, edits = store.minutes("BTCUSDT")
    assert edits == 1 and cols.shape[1] == 100 and cols[0, 0] == T + 60 * 100
    assert np.array_equal(cols, np.vstack(store.arrays("BTCUSDT")))
    assert cols.flags.writeable is False and store.merge("BTCUSDT", [candle(200)]) == 1


def test_the_closed_key_holds_while_a_new_bucket_only_begins() -> None:
    store = CandleStore()
    store.merge("BTCUSDT", [candle(i) for i in range(14)])  # 00:00-00:13: bucket 0 incomplete
    incomplete = store.closed_key("BTCUSDT", "15m")
    store.merge("BTCUSDT", [candle(14)])  # bucket 0 complete: a closed bucket more
    complete = store.closed_key("BTCUSDT", "15m")
    assert complete != incomplete
    store.merge("BTCUSDT", [candle(15), candle(16)])  # bucket 1 begins: nothing else closed
    assert store.closed_key("BTCUSDT", "15m") == complete
    store.merge("BTCUSDT", [candle(i) for i in range(17, 29)])  # 00:28, bucket 1 open
    assert store.closed_key("BTCUSDT", "15m") == complete
    store.merge("BTCUSDT", [candle(31)])  # bucket 2 begins with bucket 1 left incomplete
    assert store.closed_key("BTCUSDT", "15m") != complete
    after = store.closed_key("BTCUSDT", "15m")
    store.merge("BTCUSDT", [candle(29)])  # bucket 1 filled in: an edit
    assert store.closed_key("BTCUSDT", "15m") != after
