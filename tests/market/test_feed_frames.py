"""Frame handling: every Binance payload becomes the right event; every bad frame has a reason."""

from __future__ import annotations

import math

import msgspec
import pytest
from structlog.testing import capture_logs

from engine import metrics
from engine.bus import Bus
from engine.clock import SimClock
from engine.events import BookTicker, Kline, MarkPrice, Ticker24h
from engine.market.book import PriceBook
from engine.market.candles import Candle, CandleStore
from engine.market.feed import Feed
from engine.market.frames import FrameParser, frame_decoder, stream_names
from engine.market.hotpath import TICK_FLUSH_EVERY, Route, frame_handler
from engine.settings import FeedSettings
from tests.support.feed import T0, book_ticker, frame, kline, mark_price, ticker

E = int(T0 * 1000)


@pytest.fixture
def feed() -> Feed:
    s = FeedSettings(symbols=("BTCUSDT", "ETHUSDT"), max_frame_bytes=2048)
    return Feed(s, Bus(), SimClock(start=T0), PriceBook(), CandleStore())


def events(feed: Feed, *raws: str | bytes) -> list[object]:
    sub = feed.bus.subscribe("t", [BookTicker, Kline, MarkPrice, Ticker24h])
    for raw in raws:
        feed.handle_frame(raw, T0 + 0.01)
    return sub.drain()


def test_stream_names_follow_binance_and_spot_has_no_mark_price() -> None:
    assert stream_names(("BTCUSDT",), "futures") == [
        "btcusdt@bookTicker", "btcusdt@kline_1m", "btcusdt@markPrice@1s", "btcusdt@ticker"]
    assert stream_names(("BTCUSDT",), "spot") == [
        "btcusdt@bookTicker", "btcusdt@kline_1m", "btcusdt@ticker"]


def test_each_futures_payload_becomes_its_event(feed: Feed) -> None:
    c = Candle(T0 // 60 * 60, 100.0, 101.0, 99.0, 100.5, 12.5)
    got = events(feed,
                 book_ticker("BTCUSDT", 100.4, 100.5, E, bid_qty="1.250", ask_qty="0.750"),
                 kline("BTCUSDT", c, E + 1, closed=False),
                 mark_price("BTCUSDT", 100.45, E + 2, rate=-0.0002, index=100.44),
                 ticker("BTCUSDT", 100.47, E + 3, change_pct=-1.25, high=102.0, low=98.0))
    recv = T0 + 0.01
    assert got == [
        BookTicker("BTCUSDT", 100.4, 1.25, 100.5, 0.75, (E - 1) / 1000, recv),
        Kline("BTCUSDT", "1m", c.open_time, c.open_time + 59.999, 100.0, 101.0, 99.0, 100.5,
              12.5, False, (E + 1) / 1000, recv),
        MarkPrice("BTCUSDT", 100.45, 100.44, -0.0002, 1_767_254_400.0, (E + 2) / 1000, recv),
        Ticker24h("BTCUSDT", 100.47, -1.25, 102.0, 98.0, 1234.5, 5678.9, (E + 3) / 1000, recv),
    ]
    q = feed.book.quote("BTCUSDT")
    assert q is not None and q.updated == recv and q.exchange_time == (E + 3) / 1000
    assert feed.candles.forming("BTCUSDT") == c


def test_spot_book_ticker_without_event_time_uses_receive_time_and_update_id_order() -> None:
    s = FeedSettings(market="spot", symbols=("BTCUSDT",))
    feed = Feed(s, Bus(), SimClock(start=T0), PriceBook(), CandleStore())
    spot = '{"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT",' \
           '"b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}}'
    got = events(feed, spot, spot.replace("400900217", "400900216"))
    assert got == [BookTicker("BTCUSDT", 25.3519, 31.21, 25.3652, 40.66, T0 + 0.01, T0 + 0.01)]
    assert feed.dropped == {"time_backwards": 1}
    assert "markPrice" not in feed.url


BAD = {
    "oversized": book_ticker("BTCUSDT", 1.0, 1.1, E) + " " * 3000,
    "not_json": '{"stream": "btcusdt@bookTicker", "data": {',
    "bad_shape": '["btcusdt@bookTicker"]',
    "unknown_stream": book_ticker("BTCUSDT", 1.0, 1.1, E).replace("btcusdt@", "btcusdt@depth"),
    "symbol_mismatch": book_ticker("BTCUSDT", 1.0, 1.1, E).replace('"s":"BTCUSDT"',
                                                                   '"s":"ETHUSDT"'),
    "missing_field": mark_price("BTCUSDT", 1.0, E).replace('"r":"0.0001",', ""),
    "non_numeric": ticker("BTCUSDT", 1.0, E).replace('"c":"1.0"', '"c":"one"'),
    "nan_price": mark_price("BTCUSDT", 1.0, E).replace('"p":"1.0"', '"p":"nan"'),
    "non_positive_price": book_ticker("BTCUSDT", 1.0, 1.1, E).replace('"b":"1.0"', '"b":"-1"'),
    "bad_quantity": book_ticker("BTCUSDT", 1.0, 1.1, E, bid_qty="-3"),
    "bad_candle": kline("BTCUSDT", Candle(T0 // 60 * 60, 1.0, 0.5, 0.9, 1.0, 1.0), E, False),
    "crossed_book": book_ticker("BTCUSDT", 1.2, 1.1, E),
}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_bad_frame_is_dropped_with_its_reason_and_never_reaches_the_book(
    feed: Feed, reason: str
) -> None:
    before = metrics.DROPPED_FRAMES.labels(reason=reason)._value.get()
    assert events(feed, BAD[reason]) == []
    assert feed.dropped == {reason: 1}
    assert feed.book.quote("BTCUSDT") is None
    assert feed.candles.forming("BTCUSDT") is None
    assert metrics.DROPPED_FRAMES.labels(reason=reason)._value.get() == before + 1


def test_zero_price_and_infinite_price_are_refused(feed: Feed) -> None:
    events(feed, book_ticker("BTCUSDT", 1.0, 1.1, E).replace('"b":"1.0"', '"b":"0"'),
           book_ticker("BTCUSDT", 1.0, 1.1, E).replace('"b":"1.0"', '"b":"1e999"'))
    assert feed.dropped == {"non_positive_price": 1, "non_numeric": 1}


def test_event_time_going_backwards_is_dropped_per_stream(feed: Feed) -> None:
    got = events(feed,
                 book_ticker("BTCUSDT", 1.0, 1.1, E + 500),
                 mark_price("BTCUSDT", 1.05, E),  # another stream: its own order
                 book_ticker("BTCUSDT", 1.0, 1.2, E + 500),  # same time is fine
                 book_ticker("BTCUSDT", 0.9, 1.0, E + 499))
    assert len(got) == 3
    assert feed.dropped == {"time_backwards": 1}
    q = feed.book.quote("BTCUSDT")
    assert q is not None and q.ask == 1.2


def test_drops_are_logged_at_most_once_per_reason_per_interval() -> None:
    s = FeedSettings(symbols=("BTCUSDT",))
    clock = SimClock(start=T0)
    feed = Feed(s, Bus(), clock, PriceBook(), CandleStore())
    with capture_logs() as logs:
        for i in range(50):
            feed.handle_frame("garbage", T0 + i * 0.1)  # 5 seconds of garbage
        feed.handle_frame("garbage", T0 + 11)
    dropped = [entry for entry in logs if entry["event"] == "feed.frame_dropped"]
    assert [(d["reason"], d["suppressed"], d["total"]) for d in dropped] == [
        ("not_json", 0, 1), ("not_json", 49, 51)]
    assert feed.status()["dropped"] == {"not_json": 51}


def test_frames_read_as_bytes_are_handled_and_a_dropped_ones_sample_is_logged_as_text() -> None:
    feed = Feed(FeedSettings(symbols=("BTCUSDT",)), Bus(), SimClock(start=T0), PriceBook(),
                CandleStore())
    with capture_logs() as logs:
        got = events(feed, book_ticker("BTCUSDT", 1.0, 1.1, E).encode(), b"garbage \xff")
    assert got == [BookTicker("BTCUSDT", 1.0, 1.5, 1.1, 2.0, (E - 1) / 1000, T0 + 0.01)]
    assert [(d["reason"], d["sample"]) for d in logs if d["event"] == "feed.frame_dropped"] == [
        ("not_json", "garbage \ufffd")]


def test_tick_counters_are_flushed_each_time_a_streams_events_reach_a_multiple_of_1024() -> None:
    feed = Feed(FeedSettings(symbols=("BTCUSDT",)), Bus(), SimClock(start=T0), PriceBook(),
                CandleStore())
    ticks = metrics.TICKS.labels(symbol="BTCUSDT", kind="BookTicker")
    before = ticks._value.get()
    for i in range(TICK_FLUSH_EVERY - 1):
        feed.handle_frame(book_ticker("BTCUSDT", 1.0, 1.1, E + i), T0)
    feed.handle_frame("garbage", T0)  # a drop counts as a frame, not as a tick
    assert ticks._value.get() == before
    feed.handle_frame(book_ticker("BTCUSDT", 1.0, 1.1, E + TICK_FLUSH_EVERY), T0)
    assert ticks._value.get() == before + TICK_FLUSH_EVERY
    assert feed.frames == TICK_FLUSH_EVERY + 1


def test_status_reports_connection_drops_and_price_age(feed: Feed) -> None:
    events(feed, book_ticker("BTCUSDT", 1.0, 1.1, E), "nope")
    st = feed.status()
    assert st["connected"] is False and st["reconnects"] == 0 and st["frames"] == 2
    assert st["price_age"] == {"BTCUSDT": 0.0, "ETHUSDT": None}
    assert st["stale"] == ["ETHUSDT"]
    assert st["dropped"] == {"not_json": 1}
    assert st["url"].startswith("wss://fstream.binance.com/stream?streams=btcusdt@bookTicker/")


def test_parser_never_raises_on_arbitrary_input() -> None:
    parser = FrameParser(("BTCUSDT",), "futures", 4096)
    samples = ["", "null", "1", '{"stream": 1, "data": {}}', '{"stream": "x", "data": []}',
               '{"stream":"btcusdt@bookTicker","data":{"s":"BTCUSDT"}}',
               '{"stream":"btcusdt@kline_1m","data":{"s":"BTCUSDT","E":1,"k":null}}',
               '{"stream":"btcusdt@kline_1m","data":{"s":"BTCUSDT","E":1,"k":{"o":[]}}}',
               b"\xff\xfe", frame("btcusdt@ticker", {"s": "BTCUSDT", "E": "x"})]
    for raw in samples:
        result = parser.parse(raw, T0)
        assert isinstance(result, str), raw


def _feed_answer(raw: str) -> object:
    """The feed's answer for one frame (fast path first): its event, or its drop reason."""
    feed = Feed(FeedSettings(symbols=("BTCUSDT",)), Bus(), SimClock(start=T0), PriceBook(),
                CandleStore())
    got = events(feed, raw)
    return got[0] if got else next(iter(feed.dropped))


def _general_answer(raw: str) -> object:
    return FrameParser(("BTCUSDT",), "futures", 4096).parse(raw, T0 + 0.01)


TYPICAL = [
    book_ticker("BTCUSDT", 100.4, 100.5, E),
    kline("BTCUSDT", Candle(T0 // 60 * 60, 100.0, 101.0, 99.0, 100.5, 12.5), E, closed=True),
    mark_price("BTCUSDT", 100.45, E, rate=-0.0002),
    ticker("BTCUSDT", 100.47, E, change_pct=-1.25),
]


@pytest.mark.parametrize("raw", TYPICAL)
def test_binance_frames_take_the_fast_path_and_apply_what_the_general_path_would(
        raw: str) -> None:
    parser = FrameParser(("BTCUSDT",), "futures", 4096, stream=Route)
    book, candles, published, left = PriceBook(), CandleStore(), [], []
    handle = frame_handler(parser, book=book, candles=candles, publish=published.append,
                           on_hole=lambda: None, flush=lambda: None,
                           general=lambda r, t: left.append(r))
    handle(raw, T0)
    assert left == []  # never handed to the general path
    general = FrameParser(("BTCUSDT",), "futures", 4096).parse(raw, T0)
    assert published == [general]
    reference = PriceBook()
    reference.apply(general)  # type: ignore[arg-type]
    assert book.state() == reference.state()
    assert [(st.count, st.last) for st in parser.streams.values() if st.count] == [(1, E)]


def test_the_feeds_decoder_takes_only_its_streams() -> None:
    names = stream_names(("BTCUSDT",), "futures")
    decode = frame_decoder(names).decode
    frame = decode(book_ticker("BTCUSDT", 1.0, 1.1, E))
    assert frame.stream == names[0]
    with pytest.raises(msgspec.ValidationError):
        decode(book_ticker("ETHUSDT", 1.0, 1.1, E))
    assert frame_decoder().decode(book_ticker("ETHUSDT", 1.0, 1.1, E)).stream == (
        "ethusdt@bookTicker")


def test_a_payload_on_another_kinds_stream_or_symbol_is_left_to_the_general_path() -> None:
    parser = FrameParser(("BTCUSDT", "ETHUSDT"), "futures", 4096, stream=Route)
    published: list[object] = []
    left: list[str | bytes] = []
    handle = frame_handler(parser, book=PriceBook(), candles=CandleStore(),
                           publish=published.append, on_hole=lambda: None, flush=lambda: None,
                           general=lambda r, t: left.append(r))
    on_kline_stream = book_ticker("BTCUSDT", 1.0, 1.1, E).replace("@bookTicker", "@kline_1m")
    on_eth_stream = book_ticker("BTCUSDT", 1.0, 1.1, E).replace("btcusdt@", "ethusdt@")
    for raw in (on_kline_stream, on_eth_stream):
        handle(raw, T0)
    assert published == [] and left == [on_kline_stream, on_eth_stream]


@pytest.mark.parametrize("raw", [
    *TYPICAL,
    # Shapes the typed fast path leaves to the general path, which decides as it always did:
    book_ticker("BTCUSDT", 1.0, 1.1, E).replace(f'"E":{E}', f'"E":"{E}"'),  # E as a string
    book_ticker("BTCUSDT", 1.0, 1.1, E).replace('"b":"1.0"', '"b":"+1.0"'),  # float() takes it
    book_ticker("BTCUSDT", 1.0, 1.1, E).replace('"e":"bookTicker",', ""),  # no event type
    book_ticker("BTCUSDT", 1.0, 1.1, E).replace('"b":"1.0"', '"b":"1e999"'),  # out of range
    book_ticker("BTCUSDT", 1.0, 1.1, E).replace('"b":"1.0"', '"b":"0"'),
    book_ticker("BTCUSDT", 1.0, 1.1, E, ask_qty="-0.5"),
    book_ticker("BTCUSDT", 1.2, 1.1, E),  # crossed
    kline("BTCUSDT", Candle(T0 // 60 * 60, 1.0, 1.0, 1.0, 1.0, 1.0), E, False).replace(
        '"x":false', '"x":0'),  # closed flag not a bool
    kline("BTCUSDT", Candle(T0 // 60 * 60, 1.0, 1.0, 1.0, 1.0, 1.0), E, False).replace(
        '"i":"1m"', '"i":"5m"'),
    kline("BTCUSDT", Candle(T0 // 60 * 60 + 1, 1.0, 1.0, 1.0, 1.0, 1.0), E, False),
    mark_price("BTCUSDT", 1.0, E).replace('"p":"1.0"', '"p":"inf"'),
    mark_price("BTCUSDT", 1.0, E, rate=math.inf),
    ticker("BTCUSDT", 1.0, E).replace('"P":"1.5"', '"P":"nan"'),
    ticker("BTCUSDT", 1.0, E).replace('"s":"BTCUSDT"', '"s":"ETHUSDT"'),
    frame("btcusdt@ticker", {"e": "kline", "E": E, "s": "BTCUSDT"}),  # payload of another kind
])
def test_fast_path_and_general_path_give_the_same_answer(raw: str) -> None:
    fast, general = _feed_answer(raw), _general_answer(raw)
    assert fast == general
    assert type(fast) is type(general)
