"""Binance history for backtests: paging, the weight header, 429 + Retry-After, the disk cache,
and a stream that publishes nothing before its time."""

from __future__ import annotations

import orjson
import pytest

from engine.clock import LiveClock
from engine.market.binance import BinanceRest
from engine.market.fakebinance import FakeBinance
from engine.market.history import DAY, History, stream
from engine.settings import Settings

START = 1_790_812_800.0  # 2026-10-01T00:00:00Z
NOW = START + 30 * DAY


def settings(url: str, cache: str, **feed) -> Settings:
    return Settings.model_validate({
        "feed": {"futures_rest_url": url, "symbols": ["BTCUSDT", "ETHUSDT"],
                 "backfill_candles": 60, "backfill_higher_candles": 4, **feed},
        "backtest": {"cache_dir": cache}})


@pytest.fixture
async def server():
    fake = FakeBinance(page=500)
    await fake.start()
    yield fake
    await fake.stop()


async def load(s: Settings, start: float, end: float):
    rest = BinanceRest(s.feed, LiveClock())
    history = History(s, rest, now=NOW)
    try:
        return history, await history.load(s.feed.symbols, start, end), rest
    finally:
        await rest.close()


async def test_a_day_is_fetched_in_pages_and_every_minute_is_there(server, tmp_path):
    s = settings(server.rest_url, str(tmp_path))
    history, data, _ = await load(s, START, START + DAY)

    btc = [c for c in data["BTCUSDT"].candles if c.open_time >= START]
    assert [c.open_time for c in btc] == [START + 60 * i for i in range(1440)]
    assert btc[0].close == pytest.approx(server.candle("BTCUSDT", START)[3], rel=1e-9)
    assert len(data["BTCUSDT"].marks) == 2 * 1440  # the warm-up day and the window's day
    assert [t for t, _ in data["BTCUSDT"].funding if START <= t < START + DAY] == [
        START, START + 8 * 3600, START + 16 * 3600]
    klines = [q for p, q in server.requests if p == "/fapi/v1/klines" and "startTime" in q]
    assert [int(q["limit"]) for q in klines[:3]] == [1440, 940, 440]  # pages of 500 rows
    assert history.fetched_days == 4 and history.cached_days == 0


async def test_a_second_run_fetches_nothing(server, tmp_path):
    s = settings(server.rest_url, str(tmp_path))
    await load(s, START, START + DAY)
    asked = len(server.requests)

    history, data, _ = await load(s, START, START + DAY)

    assert len(server.requests) == asked
    assert history.fetched_days == 0 and history.cached_days == 4
    assert len(data["ETHUSDT"].candles) == 1440 + 60


def flat(items):
    """Yield (t, item) with each batch opened and its path items' frames in line."""
    for t, item in items:
        for x in item if isinstance(item, list) else [item]:
            if isinstance(x, dict) and "path" in x:
                yield from ((t, f) for f in x["frames"])
            else:
                yield t, x


async def test_429_waits_retry_after_then_retries_and_the_weight_header_is_followed(
        server, tmp_path):
    server.faults.rate_limited, server.faults.retry_after = 1, "1"
    s = settings(server.rest_url, str(tmp_path), symbols=["BTCUSDT"])
    clock = LiveClock()
    started = clock.monotonic()
    _, data, rest = await load(s, START, START + 3600)

    assert clock.monotonic() - started >= 1.0  # waited Retry-After
    assert server.requests[0][0] == server.requests[1][0]  # the refused request, retried
    assert rest.budget.used >= server.weight  # the X-MBX-USED-WEIGHT-1M header was followed
    assert data["BTCUSDT"].candles


async def test_the_stream_publishes_candles_at_their_close_and_funding_at_its_time(
        server, tmp_path):
    s = settings(server.rest_url, str(tmp_path), symbols=["BTCUSDT"])
    _, data, _ = await load(s, START, START + DAY)
    items = list(flat(stream(data, s, START, START + DAY)))

    times = [t for t, _ in items]
    assert times == sorted(times)
    for t, item in items:
        if isinstance(item, dict):  # a backfill: only buckets closed by t
            for c in item["candles"]:
                seconds = {"1m": 60, "15m": 900, "4h": 14_400}[item["interval"]]
                assert c[0] + seconds <= t + 0.002
            continue
        frame = orjson.loads(item)["data"]
        assert frame["E"] / 1000 <= t + 1e-6  # nothing carries a later exchange time
        if "k" in frame:
            assert frame["k"]["x"] is True and frame["k"]["T"] / 1000 <= t + 1e-6
    rates = {(t, orjson.loads(i)["data"]["r"]) for t, i in items
             if isinstance(i, str) and "markPrice" in i}
    settled = dict(data["BTCUSDT"].funding)
    for when, rate in settled.items():
        if START < when < START + DAY:
            shown_before = {r for t, r in rates if t < when}
            shown_at = {r for t, r in rates if t == when}
            assert repr(rate) in shown_at and repr(rate) not in shown_before


async def test_the_book_walks_each_minute_with_the_spread_setting(server, tmp_path):
    s = settings(server.rest_url, str(tmp_path), symbols=["BTCUSDT"])
    s = s.model_copy(update={"backtest": s.backtest.model_copy(update={"spread_bps": 10.0})})
    _, data, _ = await load(s, START, START + 120)
    books = [orjson.loads(i)["data"] for _, i in flat(stream(data, s, START, START + 120))
             if isinstance(i, str) and "bookTicker" in i]
    first = data["BTCUSDT"].candles[60]
    assert len(books) == 8  # open, low/high, high/low, close: two minutes
    bid, ask = float(books[3]["b"]), float(books[3]["a"])
    assert bid <= first.close * (1 - 0.0005) + 1e-9 and ask >= first.close * (1 + 0.0005) - 1e-9
    assert ask - bid == pytest.approx(first.close * 0.001, rel=0.01)


async def test_the_next_funding_time_stays_on_schedule_after_the_last_known_rate(
        server, tmp_path):
    s = settings(server.rest_url, str(tmp_path), symbols=["BTCUSDT"])
    _, data, _ = await load(s, START, START + DAY)
    nexts = {orjson.loads(i)["data"]["T"] / 1000
             for t, i in flat(stream(data, s, START, START + DAY))
             if isinstance(i, str) and "markPrice" in i and t > START + 16 * 3600}
    assert nexts == {START + DAY}  # 16:00 was the last rate fetched; 00:00 is next


async def test_each_time_is_one_batch_and_the_path_inside_a_minute_is_one_optional_item(
        server, tmp_path):
    s = settings(server.rest_url, str(tmp_path), symbols=["BTCUSDT", "ETHUSDT"])
    _, data, _ = await load(s, START, START + 120)
    items = list(stream(data, s, START, START + 120))
    batches = [(t, b) for t, b in items if isinstance(b, list)]
    assert [t for t, _ in batches] == [START + 59.999, START + 119.999]  # one line per time
    for _, batch in batches:
        kinds = [("path" if "path" in x else "backfill") if isinstance(x, dict)
                 else orjson.loads(x)["data"]["e"] for x in batch]
        assert kinds == ["kline", "path", "bookTicker", "markPriceUpdate"] * 2
        paths = [x for x in batch if isinstance(x, dict)]
        assert [p["path"] for p in paths] == ["BTCUSDT", "ETHUSDT"]
        assert all(len(p["frames"]) == 3 for p in paths)  # open, low/high, high/low
