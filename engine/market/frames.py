"""Parse Binance combined-stream frames into market events, rejecting bad ones with a reason.

A frame is `{"stream": "<symbol>@<kind>", "data": {...}}` exactly as Binance sends it. Pure code:
no I/O, no clock. `FrameParser.parse` returns a market event, or a short reason string when the
frame must be dropped; nothing raises for bad input.

Two paths, one answer. The feed's fast path (engine/market/hotpath.py) decodes a frame in one
call into the typed msgspec structs below (tagged by Binance's `"e"` field, numbers parsed from
Binance's strings by msgspec, which also checks every price, quantity and rate's range), and
accepts it only when every remaining check passes. Anything else — a frame msgspec refuses, a
spot frame without `"e"`, a string where an integer time belongs, a NaN, a crossed book, an
event time going back — is handed to `FrameParser.parse`, the general path (orjson into dicts,
field by field), which finds the precise drop reason or, for the odd frame the fast path is too
strict for, the event. So the fast path never decides a drop.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Collection
from typing import Annotated, Any, Literal

import msgspec
import orjson

from engine.events import BookTicker, Kline, MarketEvent, MarkPrice, Ticker24h

_INF = math.inf
_MAX = sys.float_info.max
# Integer fields (times, ids) accept a string too, so that a string is seen (and sent to the
# general path, which refuses it as before) rather than silently converted by the lax decoder.
_Int = int | str | None
# Ranges msgspec checks while decoding (NaN fails every bound; `le=_MAX` refuses infinity), so
# a value out of range fails the typed decode and goes to the general path, which names it.
_Price = Annotated[float, msgspec.Meta(gt=0.0, le=_MAX)]
_Qty = Annotated[float, msgspec.Meta(ge=0.0, le=_MAX)]
_Finite = Annotated[float, msgspec.Meta(ge=-_MAX, le=_MAX)]


class BookFrame(msgspec.Struct, tag_field="e", tag="bookTicker", gc=False):
    """`data` of a futures `<symbol>@bookTicker` frame."""

    s: str
    b: _Price
    B: _Qty
    a: _Price
    A: _Qty
    E: _Int = None
    T: _Int = None


class KlineBody(msgspec.Struct, gc=False):
    """`data.k` of a `<symbol>@kline_1m` frame."""

    t: _Int
    T: _Int
    i: Literal["1m"]
    o: _Price
    h: _Price
    l: _Price  # noqa: E741 - Binance's name
    c: _Price
    v: _Qty
    x: bool | int | str


class KlineFrame(msgspec.Struct, tag_field="e", tag="kline", gc=False):
    """`data` of a `<symbol>@kline_1m` frame."""

    s: str
    E: _Int
    k: KlineBody


class MarkFrame(msgspec.Struct, tag_field="e", tag="markPriceUpdate", gc=False):
    """`data` of a `<symbol>@markPrice@1s` frame."""

    s: str
    E: _Int
    p: _Price
    i: _Price
    r: _Finite
    T: _Int


class TickerFrame(msgspec.Struct, tag_field="e", tag="24hrTicker", gc=False):
    """`data` of a `<symbol>@ticker` frame."""

    s: str
    E: _Int
    c: _Price
    h: _Price
    l: _Price  # noqa: E741 - Binance's name
    P: _Finite
    v: _Qty
    q: _Qty


class Frame(msgspec.Struct, gc=False):
    """A combined-stream frame: the stream name and its typed payload."""

    stream: str
    data: BookFrame | KlineFrame | MarkFrame | TickerFrame


def frame_decoder(streams: Collection[str] = ()) -> msgspec.json.Decoder[Frame]:
    """Return the typed decoder of the fast path (numbers from strings: `strict=False`). With
    `streams`, `stream` must be one of them (a `Literal`: any other fails the decode), and it
    comes back as the string msgspec keeps for that value, whose hash is already computed, so
    looking the stream up costs no hashing."""
    if not streams:
        return msgspec.json.Decoder(Frame, strict=False)
    return msgspec.json.Decoder(_configured_frame(tuple(streams)), strict=False)


@functools.lru_cache(maxsize=16)
def _configured_frame(streams: tuple[str, ...]) -> type[Frame]:
    # One type per set of streams, shared by every feed (and floor) configured alike, so the
    # fast path's attribute reads on it stay specialised to one type.
    return msgspec.defstruct(  # type: ignore[return-value]
        "Frame", [("stream", Literal[streams]),
                  ("data", BookFrame | KlineFrame | MarkFrame | TickerFrame)], gc=False)


class BadFrame(Exception):
    """Raised inside the parser for a frame to drop; carries the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _price_reason(values: tuple[Any, ...]) -> str:
    for v in values:
        if v != v:
            return "nan_price"
        if v <= 0:
            return "non_positive_price"
        if v == _INF:
            return "non_numeric"
    return "non_positive_price"


def _prices(*values: float) -> None:
    for v in values:
        if not 0.0 < v < _INF:  # False for NaN, zero, negative and infinity
            raise BadFrame(_price_reason(values))


def _quantities(*values: float) -> None:
    for v in values:
        if not 0.0 <= v < _INF:
            raise BadFrame("bad_quantity")


def _finite(*values: float) -> None:
    for v in values:
        if not -_INF < v < _INF:
            raise BadFrame("non_numeric")


def stream_names(symbols: tuple[str, ...], market: str) -> list[str]:
    """Return the combined-stream names for `symbols` (markPrice only on futures)."""
    kinds = ["bookTicker", "kline_1m", "ticker"]
    if market == "futures":
        kinds.insert(2, "markPrice@1s")
    return [f"{s.lower()}@{k}" for s in symbols for k in kinds]


class Stream:
    """One configured stream: its symbol, payload shape and general-path handler, its newest
    order key and its event count (both paths share the last two)."""

    __slots__ = ("count", "handler", "kind", "last", "shape", "symbol")

    def __init__(self, symbol: str, kind: str, shape: type,
                 handler: Callable[[dict[str, Any], float], MarketEvent]) -> None:
        self.symbol, self.kind, self.shape, self.handler = symbol, kind, shape, handler
        self.last: float | None = None  # newest order key (event time or update id)
        self.count = 0  # events returned


class FrameParser:
    """Turns raw frames into events for the configured streams; keeps per-stream event order.

    `stream` is the class of the per-stream records (the fast path's `Route` adds its targets)."""

    def __init__(self, symbols: tuple[str, ...], market: str, max_bytes: int,
                 stream: type[Stream] = Stream) -> None:
        self.max_bytes = max_bytes
        kinds: dict[str, tuple[str, type, Callable[[dict[str, Any], float], MarketEvent]]] = {
            "bookTicker": ("BookTicker", BookFrame, self._book_ticker),
            "kline_1m": ("Kline", KlineFrame, self._kline),
            "markPrice@1s": ("MarkPrice", MarkFrame, self._mark_price),
            "markPrice": ("MarkPrice", MarkFrame, self._mark_price),
            "ticker": ("Ticker24h", TickerFrame, self._ticker),
        }
        self.streams: dict[str, Stream] = {}
        for name in stream_names(symbols, market):
            lower, kind = name.split("@", 1)
            self.streams[name] = stream(lower.upper(), *kinds[kind])

    def counts(self) -> dict[tuple[str, str], int]:
        """Return the events returned so far per (symbol, event type name)."""
        out: dict[tuple[str, str], int] = {}
        for st in self.streams.values():
            out[st.symbol, st.kind] = out.get((st.symbol, st.kind), 0) + st.count
        return out

    def parse(self, raw: str | bytes, recv_time: float) -> MarketEvent | str:
        """Return the event of one frame, or the reason to drop it (the general path: any
        frame, field by field; the feed tries its typed fast path first)."""
        if len(raw) > self.max_bytes:
            return "oversized"
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "not_json"
        if type(frame) is not dict:
            return "bad_shape"
        stream = frame.get("stream")
        data = frame.get("data")
        if type(stream) is not str or type(data) is not dict:
            return "bad_shape"
        st = self.streams.get(stream)
        if st is None:
            return "unknown_stream"
        if data.get("s") != st.symbol:
            return "missing_field" if "s" not in data else "symbol_mismatch"
        try:
            event = st.handler(data, recv_time)
            order = data["E"] if "E" in data else data["u"]
            if type(order) is not int and type(order) is not float:
                raise BadFrame("non_numeric")
        except BadFrame as exc:
            return exc.reason
        except KeyError:
            return "missing_field"
        except (TypeError, ValueError):
            return "non_numeric"
        last = st.last
        if last is not None and order < last:
            return "time_backwards"
        st.last = order
        st.count += 1
        return event

    def _book_ticker(self, d: dict[str, Any], recv: float) -> BookTicker:
        bid, ask = float(d["b"]), float(d["a"])
        bid_qty, ask_qty = float(d["B"]), float(d["A"])
        _prices(bid, ask)
        _quantities(bid_qty, ask_qty)
        if bid > ask:
            raise BadFrame("crossed_book")
        # Spot bookTicker has no event time: the receive time stands in for it.
        t = d.get("T") or d.get("E")
        event_time = float(t) / 1000.0 if t is not None else recv
        return BookTicker(d["s"], bid, bid_qty, ask, ask_qty, event_time, recv)

    def _kline(self, d: dict[str, Any], recv: float) -> Kline:
        k = d["k"]
        o, h, lo, c = float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"])
        v = float(k["v"])
        _prices(o, h, lo, c)
        _quantities(v)
        if k["i"] != "1m":
            raise BadFrame("bad_shape")
        if lo > h or not lo <= o <= h or not lo <= c <= h:
            raise BadFrame("bad_candle")
        start = int(k["t"])
        if start % 60_000:
            raise BadFrame("bad_candle")
        closed = k["x"]
        if type(closed) is not bool:
            raise BadFrame("bad_shape")
        return Kline(d["s"], "1m", start / 1000.0, int(k["T"]) / 1000.0, o, h, lo, c, v,
                     closed, float(d["E"]) / 1000.0, recv)

    def _mark_price(self, d: dict[str, Any], recv: float) -> MarkPrice:
        mark, index = float(d["p"]), float(d["i"])
        rate = float(d["r"])
        _prices(mark, index)
        _finite(rate)
        return MarkPrice(d["s"], mark, index, rate, float(d["T"]) / 1000.0,
                         float(d["E"]) / 1000.0, recv)

    def _ticker(self, d: dict[str, Any], recv: float) -> Ticker24h:
        last, high, low = float(d["c"]), float(d["h"]), float(d["l"])
        change, volume, quote_volume = float(d["P"]), float(d["v"]), float(d["q"])
        _prices(last, high, low)
        _finite(change)
        _quantities(volume, quote_volume)
        return Ticker24h(d["s"], last, change, high, low, volume, quote_volume,
                         float(d["E"]) / 1000.0, recv)
