"""The feed's fast path: a typed frame straight to the price book, the candles and the bus.

`Feed.handle_frame` decodes a frame into the typed structs of engine/market/frames.py (msgspec has
then checked every field's type and range), looks its stream up (one dict lookup that yields the
stream's order key, count and targets) and calls the stream's function here, which makes the
remaining checks, builds the event, writes it into the symbol's price-book entry in place (what
`PriceBook.apply` does), updates the candles for a kline and publishes it. It returns False,
having changed nothing, whenever the general path (`FrameParser.parse`) must decide: a shape or
symbol it does not expect, a string where an integer time belongs, a crossed book or candle, an
event time going back. The general path then drops the frame with its reason, or takes it.

One function per frame kind instead of parse → apply → publish calls with a type dispatch in
each: this runs for every frame, hundreds of thousands a second in a replay.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.events import BookTicker, Kline, MarketEvent, MarkPrice, Ticker24h
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.frames import BookFrame, FrameParser, KlineFrame, MarkFrame, Stream, TickerFrame


class Route(Stream):
    """A stream with where its events go: the book (its symbol's entry, fetched on the first
    event, so a symbol never seen has no entry), the candles, the bus; `fast` is its function."""

    __slots__ = ("book", "candles", "entry", "fast", "on_hole", "publish")

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.fast: Callable[[Route, object, float], bool] = _FAST[self.shape]
        self.entry = None


def bind(parser: FrameParser, book: PriceBook, candles: CandleStore,
         publish: Callable[[MarketEvent], None], on_hole: Callable[[], None]) -> dict[str, Route]:
    """Point every stream of `parser` (made with `stream=Route`) at its targets; return them by
    stream name. `on_hole` is called when a closed kline leaves a hole in the candles."""
    routes: dict[str, Route] = {}
    for name, st in parser.streams.items():
        assert isinstance(st, Route), "the parser must be made with stream=Route"
        st.book, st.candles, st.publish, st.on_hole = book, candles, publish, on_hole
        routes[name] = st
    return routes


def _book(st: Route, d: BookFrame, recv: float) -> bool:
    if type(d) is not BookFrame or d.s != st.symbol:
        return False
    bid, ask, e, t = d.b, d.a, d.E, d.T
    if bid <= ask and type(e) is int and (t is None or type(t) is int):
        last = st.last
        if last is not None and e < last:
            return False
        st.last = e
        st.count += 1
        event_time = (t or e) / 1000.0
        entry = st.entry
        if entry is None:
            entry = st.entry = st.book.entry(st.symbol)
        entry.bid = bid
        entry.ask = ask
        if recv >= entry.updated:
            entry.updated = recv
            entry.exchange_time = event_time
        st.publish(BookTicker(d.s, bid, d.B, ask, d.A, event_time, recv))
        return True
    return False


def _kline(st: Route, d: KlineFrame, recv: float) -> bool:
    if type(d) is not KlineFrame or d.s != st.symbol:
        return False
    k = d.k
    o, h, lo, c, t, end, x, e = k.o, k.h, k.l, k.c, k.t, k.T, k.x, d.E
    if (lo <= o <= h and lo <= c <= h and type(t) is int and not t % 60_000
            and type(end) is int and type(x) is bool and type(e) is int):
        last = st.last
        if last is not None and e < last:
            return False
        st.last = e
        st.count += 1
        event = Kline(d.s, "1m", t / 1000.0, end / 1000.0, o, h, lo, c, k.v, x, e / 1000.0,
                      recv)
        entry = st.entry
        if entry is None:
            entry = st.entry = st.book.entry(st.symbol)
        entry.last = c
        if recv >= entry.updated:
            entry.updated = recv
            entry.exchange_time = event.event_time
        if st.candles.apply_kline(event):
            st.on_hole()
        st.publish(event)
        return True
    return False


def _mark(st: Route, d: MarkFrame, recv: float) -> bool:
    if type(d) is not MarkFrame or d.s != st.symbol:
        return False
    t, e = d.T, d.E
    if type(t) is int and type(e) is int:
        last = st.last
        if last is not None and e < last:
            return False
        st.last = e
        st.count += 1
        event = MarkPrice(d.s, d.p, d.i, d.r, t / 1000.0, e / 1000.0, recv)
        entry = st.entry
        if entry is None:
            entry = st.entry = st.book.entry(st.symbol)
        entry.mark = event.mark
        entry.index = event.index
        entry.funding_rate = event.funding_rate
        entry.next_funding_time = event.next_funding_time
        if recv >= entry.updated:
            entry.updated = recv
            entry.exchange_time = event.event_time
        st.publish(event)
        return True
    return False


def _ticker(st: Route, d: TickerFrame, recv: float) -> bool:
    if type(d) is not TickerFrame or d.s != st.symbol:
        return False
    e = d.E
    if type(e) is int:
        last = st.last
        if last is not None and e < last:
            return False
        st.last = e
        st.count += 1
        event = Ticker24h(d.s, d.c, d.P, d.h, d.l, d.v, d.q, e / 1000.0, recv)
        entry = st.entry
        if entry is None:
            entry = st.entry = st.book.entry(st.symbol)
        entry.last = event.last
        entry.change_pct = event.change_pct
        entry.high_24h = event.high
        entry.low_24h = event.low
        entry.volume_24h = event.volume
        entry.quote_volume_24h = event.quote_volume
        if recv >= entry.updated:
            entry.updated = recv
            entry.exchange_time = event.event_time
        st.publish(event)
        return True
    return False


_FAST: dict[type, Callable[..., bool]] = {BookFrame: _book, KlineFrame: _kline,
                                          MarkFrame: _mark, TickerFrame: _ticker}
