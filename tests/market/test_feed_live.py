"""The live feed against a real websocket server on 127.0.0.1 and REST klines via aioresponses."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from aioresponses import aioresponses
from structlog.testing import capture_logs

from engine.bus import Bus
from engine.clock import SimClock
from engine.events import BookTicker, FeedStatus, Kline, MarkPrice, Ticker24h
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.fakebinance import CLOSE, DROP, FakeBinance
from engine.market.feed import Feed
from engine.market.recording import first_frame_time
from engine.market.replay import Replay
from engine.settings import FeedSettings
from tests.support.feed import (
    KLINES_URL,
    T0,
    TIME_URL,
    book_ticker,
    comparable,
    eventually,
    kline,
    klines_callback,
    mark_price,
    minutes,
    ticker,
    time_callback,
    truth_candle,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def settings(url: str, **kw: object) -> FeedSettings:
    base: dict[str, object] = dict(
        symbols=SYMBOLS, futures_ws_url=url, futures_rest_url="http://rest.test",
        backfill_candles=5, backfill_higher_candles=0, min_backoff_seconds=0,
        max_backoff_seconds=0.01)
    base.update(kw)
    return FeedSettings(**base)  # type: ignore[arg-type]


class Harness:
    def __init__(self, s: FeedSettings, clock: SimClock, record: str | None = None) -> None:
        self.bus = Bus()
        self.events = self.bus.subscribe("test", [BookTicker, Kline, MarkPrice, Ticker24h,
                                                  FeedStatus], capacity=100_000)
        self.book = PriceBook()
        self.candles = CandleStore(s.max_candles)
        self.feed = Feed(s, self.bus, clock, self.book, self.candles, record_path=record,
                         rng=random.Random(1))
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.feed.run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task

    def statuses(self) -> list[FeedStatus]:
        return [e for e in self.events.drain() if isinstance(e, FeedStatus)]


async def test_feed_streams_reconnects_after_a_drop_and_refusals_and_backfills_the_gap_exactly(
    tmp_path: Path,
) -> None:
    clock = SimClock(start=T0)  # 00:10:30
    requests: list[dict[str, str]] = []
    record = str(tmp_path / "live.jsonl.gz")
    async with FakeBinance() as server:
        s = settings(server.ws_url)
        h = Harness(s, clock, record=record)
        with aioresponses(passthrough=["http://127.0.0.1"]) as rest:
            rest.get(KLINES_URL, callback=klines_callback(requests, clock.time), repeat=True)
            rest.get(TIME_URL, callback=time_callback(clock.time), repeat=True)
            h.start()
            # Start: connected, and the last 5 closed minutes (00:05..00:09) backfilled.
            await eventually(lambda: len(h.candles.closed("ETHUSDT")) == 5
                             and len(h.candles.closed("BTCUSDT")) == 5, "initial backfill")
            assert server.paths == ["/stream?streams=btcusdt@bookTicker/btcusdt@kline_1m/"
                                    "btcusdt@markPrice@1s/btcusdt@ticker/ethusdt@bookTicker/"
                                    "ethusdt@kline_1m/ethusdt@markPrice@1s/ethusdt@ticker"]

            # Live: prices, a forming candle, then minute 00:10 closes.
            e = int(T0 * 1000)
            m10 = T0 // 60 * 60
            server.send(book_ticker("BTCUSDT", 100.5, 100.6, e, u=1),
                        mark_price("BTCUSDT", 100.55, e + 1),
                        ticker("BTCUSDT", 100.52, e + 2),
                        kline("BTCUSDT", truth_candle("BTCUSDT", m10), e + 3, closed=False))
            await eventually(lambda: h.feed.frames == 4, "first frames")
            clock.set_time(m10 + 60.2)
            for sym in SYMBOLS:
                server.send(kline(sym, truth_candle(sym, m10), int((m10 + 60) * 1000), True))
            await eventually(lambda: h.candles.last_closed_time("ETHUSDT") == m10, "00:10 closed")

            # The connection drops; the server refuses 3 handshakes; 3 more minutes pass.
            clock.set_time(m10 + 4 * 60 + 20)  # 00:14:20: 00:11, 00:12, 00:13 were missed
            server.faults.refuse_handshakes = 3
            server.send(DROP)
            await eventually(lambda: server.connections == 2, "reconnected")
            await eventually(lambda: h.candles.last_closed_time("ETHUSDT") == m10 + 180,
                             "gap backfilled")
            server.send(book_ticker("BTCUSDT", 101.0, 101.1, e + 240_000, u=2))
            for sym in SYMBOLS:
                server.send(kline(sym, truth_candle(sym, m10 + 240), int((m10 + 300) * 1000),
                                  True))
            await eventually(lambda: all(h.candles.last_closed_time(sym) == m10 + 240
                                         for sym in SYMBOLS), "00:14 closed")
            await h.stop()

    assert server.refused == 3
    expected = minutes(m10 - 300, m10 + 240)  # 00:05 .. 00:14, no hole, no duplicate
    for sym in SYMBOLS:
        assert h.candles.closed(sym) == [truth_candle(sym, t) for t in expected]
    gap_queries = [q for q in requests if q.get("startTime") == str(int((m10 + 60) * 1000))]
    assert {q["symbol"] for q in gap_queries} == set(SYMBOLS)
    assert all(q["endTime"] == str(int((m10 + 180) * 1000)) for q in gap_queries)

    q = h.book.quote("BTCUSDT")
    assert q is not None
    assert (q.bid, q.ask, q.mark, q.change_pct) == (101.0, 101.1, 100.55, 1.5)
    assert q.last == truth_candle("BTCUSDT", m10 + 240).close
    status = h.feed.status()
    assert status["reconnects"] == 1
    assert status["connected"] is False  # stopped
    assert status["dropped"] == {}
    states = [(st.state, st.gap_seconds) for st in h.statuses()]
    assert states[:2] == [("connected", 0.0), ("backfilled", 300.0)]
    assert ("disconnected", 0.0) in states
    assert ("backfilled", 180.0) in states
    assert states.count(("connected", 0.0)) == 2

    # Replaying what the live run recorded rebuilds the same book and candles.
    r_clock = SimClock(start=first_frame_time(record) or 0.0)
    r = Harness(s, r_clock)
    await Replay(record, r.feed, r_clock).run()
    for sym in SYMBOLS:
        assert r.candles.closed(sym) == h.candles.closed(sym)
        assert r.candles.forming(sym) == h.candles.forming(sym)
        assert comparable(r.book.quote(sym)) == comparable(h.book.quote(sym))
    assert r.feed.frames == h.feed.frames


async def test_bad_frames_over_the_socket_are_dropped_by_reason_and_never_reach_the_book() -> None:
    clock = SimClock(start=T0)
    async with FakeBinance() as server:
        h = Harness(settings(server.ws_url, backfill_candles=0, max_frame_bytes=1024), clock)
        with aioresponses(passthrough=["http://127.0.0.1"]):
            h.start()
            e = int(T0 * 1000)
            good = book_ticker("BTCUSDT", 100.0, 100.1, e, u=10)
            server.send(
                good,
                "{not json",
                '{"result": null, "id": 1}',
                book_ticker("LTCUSDT", 1.0, 1.1, e),
                book_ticker("BTCUSDT", 100.0, 100.1, e).replace('"b":"100.0",', ""),
                book_ticker("BTCUSDT", 100.0, 100.1, e).replace('"100.0"', '"abc"'),
                book_ticker("BTCUSDT", 100.0, 100.1, e).replace('"100.0"', '"NaN"'),
                book_ticker("BTCUSDT", 100.0, 100.1, e).replace('"100.0"', '"0"'),
                book_ticker("BTCUSDT", 100.0, 100.1, e).replace('"100.0"', '"-5"'),
                book_ticker("BTCUSDT", 99.0, 99.1, e - 1000, u=11),
                book_ticker("BTCUSDT", 100.0, 100.1, e, u=12) + " " * 2000,
            )
            await eventually(lambda: h.feed.frames == 11, "all frames read")
            await h.stop()
    assert h.feed.status()["dropped"] == {
        "bad_shape": 1, "missing_field": 1, "nan_price": 1, "non_numeric": 1,
        "non_positive_price": 2, "not_json": 1, "oversized": 1, "time_backwards": 1,
        "unknown_stream": 1,
    }
    q = h.book.quote("BTCUSDT")
    assert q is not None and (q.bid, q.ask) == (100.0, 100.1)


async def test_a_normal_close_by_the_server_is_a_drop_and_the_feed_reconnects() -> None:
    clock = SimClock(start=T0)
    async with FakeBinance() as server:
        h = Harness(settings(server.ws_url, backfill_candles=0), clock)
        with aioresponses(passthrough=["http://127.0.0.1"]), capture_logs() as logs:
            h.start()
            e = int(T0 * 1000)
            server.send(book_ticker("BTCUSDT", 100.0, 100.1, e), CLOSE)
            await eventually(lambda: server.connections == 2, "reconnected")
            server.send(book_ticker("BTCUSDT", 100.2, 100.3, e + 1))
            await eventually(lambda: h.feed.frames == 2, "frames on both connections")
            await h.stop()
    status = h.feed.status()
    assert status["reconnects"] == 1 and status["dropped"] == {}
    assert [e["reason"] for e in logs if e["event"] == "feed.disconnected"] == [
        "ConnectionError('server closed the connection')"]
    q = h.book.quote("BTCUSDT")
    assert q is not None and (q.bid, q.ask) == (100.2, 100.3)


async def test_back_off_waits_on_the_clock_and_grows_while_the_server_refuses() -> None:
    clock = SimClock(start=T0)
    async with FakeBinance() as server:
        h = Harness(settings(server.ws_url, backfill_candles=0, min_backoff_seconds=1,
                             max_backoff_seconds=8), clock)
        server.faults.refuse_handshakes = 3
        with aioresponses(passthrough=["http://127.0.0.1"]):
            h.start()
            waits = []
            for attempt in range(3):
                await eventually(lambda: clock.next_wakeup() is not None, "back-off sleep")
                wake = clock.next_wakeup()
                assert wake is not None
                waits.append(wake - clock.time())
                assert server.connections == 0
                await clock.advance_to(wake)
                await eventually(lambda a=attempt: server.refused >= min(a + 2, 3),
                                 "next attempt")
            await eventually(lambda: h.feed.connected, "connected after refusals")
            await h.stop()
    # Equal jitter: attempt n waits between half and all of min(8, 1 * 2**n) seconds.
    for n, wait in enumerate(waits):
        assert 2**n / 2 <= wait <= 2**n


async def test_feed_reconnects_on_purpose_after_reconnect_after_hours() -> None:
    clock = SimClock(start=T0)
    async with FakeBinance() as server:
        h = Harness(settings(server.ws_url, backfill_candles=0, reconnect_after_hours=1), clock)
        with aioresponses(passthrough=["http://127.0.0.1"]):
            h.start()
            await eventually(lambda: h.feed.connected and clock.next_wakeup() is not None,
                             "connected")
            assert clock.next_wakeup() == T0 + 3600
            await clock.advance(3600)
            await eventually(lambda: server.connections == 2, "planned reconnect")
            await eventually(lambda: h.feed.connected, "connected again")
            await h.stop()
    details = [st.detail for st in h.statuses() if st.state == "disconnected"]
    assert details[0] == "planned reconnect"
    assert h.feed.status()["reconnects"] == 1
