"""The feed's fast path: a typed frame straight to the price book, the candles and the bus.

`frame_handler` returns `Feed.handle_frame`: it decodes a frame into the typed structs of
engine/market/frames.py (msgspec has then checked its shape and every number's range), looks its
stream up (one dict lookup that yields the stream's symbol, order key, count and targets),
makes the remaining checks, builds the event, writes it into the symbol's price-book entry in
place (what `PriceBook.apply` does), updates the candles for a kline and publishes it. Whenever
the general path (`FrameParser.parse`) must decide — a shape or symbol it does not expect, a
string where an integer time belongs, a crossed book or candle, an event time going back — it
changes nothing and hands the frame to `general`, which drops it with its reason, or takes it.

This runs for every frame, hundreds of thousands a second in a replay, so each stream gets one
closure of its frame kind (`_book_path`, `_kline_path`, `_mark_path`, `_ticker_path`: names in
cells, not attribute chains), found by the same dict lookup that checks the stream, instead of
parse → apply → publish calls with a type dispatch in each: a Python call costs about as much
as a block, so the frame pays one call and no dispatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from engine.events import BookTicker, Kline, MarketEvent, MarkPrice, Ticker24h
from engine.market.book import PriceBook, _Entry
from engine.market.candles import CandleStore
from engine.market.frames import (
    BookFrame,
    FrameParser,
    KlineFrame,
    MarkFrame,
    Stream,
    TickerFrame,
    frame_decoder,
)

FrameHandler = Callable[[str | bytes, float], None]
# One stream's fast path: (the frame's typed payload, receive time) → True when it was taken
FastPath = Callable[[Any, float], bool]
Publish = Callable[[MarketEvent], None]
# Events of one stream between two flushes of the tick counters (a power of 2): the stream's
# count is the only per-frame counter (an int past 256 is a new object at every increment).
TICK_FLUSH_EVERY = 1024
_FLUSH_MASK = TICK_FLUSH_EVERY - 1


class Route(Stream):
    """A stream and its symbol's price-book entry (fetched on the first event, so a symbol
    never seen has no entry)."""

    __slots__ = ("entry",)

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.entry: _Entry | None = None


def frame_handler(parser: FrameParser, *, book: PriceBook, candles: CandleStore,
                  publish: Publish, on_hole: Callable[[], None],
                  flush: Callable[[], None], general: FrameHandler,
                  record: FrameHandler | None = None) -> FrameHandler:
    """Return the per-frame function over `parser`'s streams (made with `stream=Route`): the
    fast path, else `general(raw, recv_time)`; `record(raw, recv_time)` first when given.
    `on_hole` is called when a closed kline leaves a hole in the candles, `flush` (the tick
    counters) each time a stream's count of events reaches a multiple of TICK_FLUSH_EVERY."""
    paths: dict[str, FastPath] = {}
    for name, st in parser.streams.items():
        if not isinstance(st, Route):
            raise TypeError("the parser must be made with stream=Route")
        if st.shape is BookFrame:
            paths[name] = _book_path(st, book, publish, flush)
        elif st.shape is KlineFrame:
            paths[name] = _kline_path(st, book, candles, publish, on_hole, flush)
        elif st.shape is MarkFrame:
            paths[name] = _mark_path(st, book, publish, flush)
        elif st.shape is TickerFrame:
            paths[name] = _ticker_path(st, book, publish, flush)
        else:
            raise TypeError(f"no fast path for {st.shape.__name__}")
    decode, max_bytes = frame_decoder(tuple(paths)).decode, parser.max_bytes
    not_fast = msgspec.DecodeError  # includes ValidationError (an unknown stream is one)

    def handle_frame(raw: str | bytes, recv_time: float) -> None:
        """Parse one raw frame and apply it to the book, the candles and the bus (or drop it)."""
        if len(raw) <= max_bytes:
            try:
                frame = decode(raw)
            except not_fast:  # not one of the typed shapes, or an unknown stream
                pass
            else:
                if paths[frame.stream](frame.data, recv_time):
                    return
        general(raw, recv_time)

    if record is None:
        return handle_frame

    def handle_recorded_frame(raw: str | bytes, recv_time: float) -> None:
        """Record one raw frame, then handle it."""
        record(raw, recv_time)
        handle_frame(raw, recv_time)

    return handle_recorded_frame


# Each path: the checks msgspec cannot make (the symbol here, so that `d.s` reads one struct
# type and stays specialised), the stream's order key, the event, the book entry (as
# PriceBook.apply), the bus. Names are read one at a time: unpacking four or more builds a
# tuple. A path returns False, having changed nothing, for the general path to decide.


def _book_path(st: Route, book: PriceBook, publish: Publish, flush: Callable[[], None]) -> FastPath:
    symbol, new_entry = st.symbol, book.entry

    def fast(d: Any, recv_time: float) -> bool:
        if type(d) is not BookFrame:
            return False
        bid = d.b
        ask = d.a
        e = d.E
        t = d.T
        if not (d.s == symbol and bid <= ask and type(e) is int
                and (t is None or type(t) is int)):
            return False
        last = st.last
        if last is not None and e < last:
            return False
        st.last = e
        count = st.count = st.count + 1
        event_time = (t or e) / 1000.0
        entry = st.entry
        if entry is None:
            entry = st.entry = new_entry(symbol)
        entry.bid = bid
        entry.ask = ask
        if recv_time >= entry.updated:
            entry.updated = recv_time
            entry.exchange_time = event_time
        publish(BookTicker(symbol, bid, d.B, ask, d.A, event_time, recv_time))
        if not count & _FLUSH_MASK:
            flush()
        return True

    return fast


def _kline_path(st: Route, book: PriceBook, candles: CandleStore, publish: Publish,
                on_hole: Callable[[], None], flush: Callable[[], None]) -> FastPath:
    symbol, new_entry, apply_kline = st.symbol, book.entry, candles.apply_kline

    def fast(d: Any, recv_time: float) -> bool:
        if type(d) is not KlineFrame:
            return False
        k = d.k
        o = k.o
        h = k.h
        lo = k.l
        c = k.c
        t = k.t
        end = k.T
        x = k.x
        e = d.E
        if not (d.s == symbol and lo <= o <= h and lo <= c <= h and type(t) is int
                and not t % 60_000 and type(end) is int and type(x) is bool
                and type(e) is int):
            return False
        last = st.last
        if last is not None and e < last:
            return False
        st.last = e
        count = st.count = st.count + 1
        event_time = e / 1000.0
        entry = st.entry
        if entry is None:
            entry = st.entry = new_entry(symbol)
        entry.last = c
        if recv_time >= entry.updated:
            entry.updated = recv_time
            entry.exchange_time = event_time
        kline = Kline(symbol, "1m", t / 1000.0, end / 1000.0, o, h, lo, c, k.v, x, event_time,
                      recv_time)
        if apply_kline(kline):
            on_hole()
        publish(kline)
        if not count & _FLUSH_MASK:
            flush()
        return True

    return fast


def _mark_path(st: Route, book: PriceBook, publish: Publish, flush: Callable[[], None]) -> FastPath:
    symbol, new_entry = st.symbol, book.entry

    def fast(d: Any, recv_time: float) -> bool:
        if type(d) is not MarkFrame:
            return False
        t = d.T
        e = d.E
        if not (d.s == symbol and type(t) is int and type(e) is int):
            return False
        last = st.last
        if last is not None and e < last:
            return False
        st.last = e
        count = st.count = st.count + 1
        mark = d.p
        index = d.i
        rate = d.r
        funding_time = t / 1000.0
        event_time = e / 1000.0
        entry = st.entry
        if entry is None:
            entry = st.entry = new_entry(symbol)
        entry.mark = mark
        entry.index = index
        entry.funding_rate = rate
        entry.next_funding_time = funding_time
        if recv_time >= entry.updated:
            entry.updated = recv_time
            entry.exchange_time = event_time
        publish(MarkPrice(symbol, mark, index, rate, funding_time, event_time, recv_time))
        if not count & _FLUSH_MASK:
            flush()
        return True

    return fast


def _ticker_path(st: Route, book: PriceBook, publish: Publish,
                 flush: Callable[[], None]) -> FastPath:
    symbol, new_entry = st.symbol, book.entry

    def fast(d: Any, recv_time: float) -> bool:
        if type(d) is not TickerFrame:
            return False
        e = d.E
        if not (d.s == symbol and type(e) is int):
            return False
        last = st.last
        if last is not None and e < last:
            return False
        st.last = e
        count = st.count = st.count + 1
        ticker = Ticker24h(symbol, d.c, d.P, d.h, d.l, d.v, d.q, e / 1000.0, recv_time)
        entry = st.entry
        if entry is None:
            entry = st.entry = new_entry(symbol)
        entry.last = ticker.last
        entry.change_pct = ticker.change_pct
        entry.high_24h = ticker.high
        entry.low_24h = ticker.low
        entry.volume_24h = ticker.volume
        entry.quote_volume_24h = ticker.quote_volume
        if recv_time >= entry.updated:
            entry.updated = recv_time
            entry.exchange_time = ticker.event_time
        publish(ticker)
        if not count & _FLUSH_MASK:
            flush()
        return True

    return fast
