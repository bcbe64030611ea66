"""Parse Binance combined-stream frames into market events, rejecting bad ones with a reason.

A frame is `{"stream": "<symbol>@<kind>", "data": {...}}` exactly as Binance sends it. Pure code:
no I/O, no clock. `FrameParser.parse` returns a market event, or a short reason string when the
frame must be dropped; nothing raises for bad input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson

from engine.events import BookTicker, Kline, MarketEvent, MarkPrice, Ticker24h

_INF = math.inf

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


class FrameParser:
    """Turns raw frames into events for the configured streams; keeps per-stream event order."""

    def __init__(self, symbols: tuple[str, ...], market: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        handlers: dict[str, Callable[[dict, float], MarketEvent]] = {
            "bookTicker": self._book_ticker,
            "kline_1m": self._kline,
            "markPrice@1s": self._mark_price,
            "markPrice": self._mark_price,
            "ticker": self._ticker,
        }
        self._routes: dict[str, tuple[str, Callable[[dict, float], MarketEvent]]] = {}
        for name in stream_names(symbols, market):
            lower, kind = name.split("@", 1)
            self._routes[name] = (lower.upper(), handlers[kind])
        self._last: dict[str, float] = {}  # stream -> newest order key (event time or update id)

    def parse(self, raw: str | bytes, recv_time: float) -> MarketEvent | str:
        """Return the event of one frame, or the reason to drop it."""
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
        route = self._routes.get(stream)
        if route is None:
            return "unknown_stream"
        symbol, handler = route
        if data.get("s") != symbol:
            return "missing_field" if "s" not in data else "symbol_mismatch"
        try:
            event = handler(data, recv_time)
            order = data["E"] if "E" in data else data["u"]
            if type(order) is not int and type(order) is not float:
                raise BadFrame("non_numeric")
        except BadFrame as exc:
            return exc.reason
        except KeyError:
            return "missing_field"
        except (TypeError, ValueError):
            return "non_numeric"
        last = self._last.get(stream)
        if last is not None and order < last:
            return "time_backwards"
        self._last[stream] = order
        return event

    def _book_ticker(self, d: dict, recv: float) -> BookTicker:
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

    def _kline(self, d: dict, recv: float) -> Kline:
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

    def _mark_price(self, d: dict, recv: float) -> MarkPrice:
        mark, index = float(d["p"]), float(d["i"])
        rate = float(d["r"])
        _prices(mark, index)
        _finite(rate)
        return MarkPrice(d["s"], mark, index, rate, float(d["T"]) / 1000.0,
                         float(d["E"]) / 1000.0, recv)

    def _ticker(self, d: dict, recv: float) -> Ticker24h:
        last, high, low = float(d["c"]), float(d["h"]), float(d["l"])
        change, volume, quote_volume = float(d["P"]), float(d["v"]), float(d["q"])
        _prices(last, high, low)
        _finite(change)
        _quantities(volume, quote_volume)
        return Ticker24h(d["s"], last, change, high, low, volume, quote_volume,
                         float(d["E"]) / 1000.0, recv)
