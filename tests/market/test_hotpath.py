"""The feed's fast path gives what the general path gives, frame for frame, over whole streams."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from engine.bus import Bus
from engine.clock import SimClock
from engine.events import BookTicker, Kline, MarkPrice, Ticker24h
from engine.market import marketgen
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.feed import Feed
from engine.market.frames import FrameParser
from engine.market.recording import read_frames
from engine.settings import FeedSettings

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample.jsonl.gz"
MARKET = (BookTicker, Kline, MarkPrice, Ticker24h)


def _general(settings: FeedSettings, frames: list[tuple[float, str]]) -> dict[str, object]:
    """Every frame through `FrameParser.parse` and `PriceBook.apply`: the reference."""
    parser = FrameParser(settings.symbols, settings.market, settings.max_frame_bytes)
    book, candles = PriceBook(), CandleStore(settings.max_candles)
    events: list[object] = []
    dropped: dict[str, int] = {}
    for t, raw in frames:
        event = parser.parse(raw, t)
        if isinstance(event, str):
            dropped[event] = dropped.get(event, 0) + 1
            continue
        book.apply(event)
        if isinstance(event, Kline):
            candles.apply_kline(event)
        events.append(event)
    return _outcome(events, dropped, book, candles, parser.counts(), settings.symbols)


def _feed(settings: FeedSettings, frames: list[tuple[float, str]]) -> dict[str, object]:
    bus = Bus()
    sub = bus.subscribe("test", MARKET, capacity=len(frames) + 1)
    feed = Feed(settings, bus, SimClock(), PriceBook(), CandleStore(settings.max_candles))
    for t, raw in frames:
        feed.handle_frame(raw, t)
    assert feed.frames == len(frames)
    return _outcome(sub.drain(), feed.dropped, feed.book, feed.candles, feed._parser.counts(),
                    settings.symbols)


def _outcome(events: list[object], dropped: dict[str, int], book: PriceBook,
             candles: CandleStore, counts: dict[tuple[str, str], int],
             symbols: tuple[str, ...]) -> dict[str, object]:
    return {"events": events, "dropped": dict(sorted(dropped.items())), "book": book.state(),
            "closed": {s: candles.closed(s) for s in symbols},
            "forming": {s: candles.forming(s) for s in symbols}, "counts": counts}


def _generated(minutes: float) -> list[tuple[float, str]]:
    gen = marketgen.generate(hours=minutes / 60, seed=5, history_minutes=0, higher_candles=0)
    return [(t, raw) for t, raw in gen if isinstance(raw, str)]


def _settings(frames: list[tuple[float, str]]) -> FeedSettings:
    symbols = sorted({raw[11:raw.index("@")].upper() for _, raw in frames})
    return FeedSettings(symbols=tuple(symbols))


DAMAGE = [  # (pattern, replacement): the ways a frame goes bad
    (r'"(b|p|c)":"[^"]*"', r'"\1":"NaN"'),  # nan_price
    (r'"(a|p|c)":"[^"]*"', r'"\1":"-1"'),  # non_positive_price
    (r'"(B|v)":"[^"]*"', r'"\1":"-2"'),  # bad_quantity
    (r'"b":"([^"]*)","B":"[^"]*","a":"([^"]*)"', r'"b":"\2","B":"1","a":"\1"'),  # crossed
    (r'"E":(\d+)', r'"E":"\1"'),  # non_numeric
    (r'"T":\d+,', ""),  # missing_field (or the book's event time falls back to E)
    (r'"x":false', '"x":0'),  # bad_shape
    (r'"i":"1m"', '"i":"5m"'),  # bad_shape
    (r'"s":"', '"s":"X'),  # symbol_mismatch
    (r'}}$', "}"),  # not_json
    (r'"e":"', '"e":"x'),  # an unknown event type: the general path decides
]


def _damaged(frames: list[tuple[float, str]], seed: int) -> list[tuple[float, str]]:
    """The frames with one in ten damaged: an older frame replayed (time_backwards), or a
    value, a field or the JSON broken."""
    rng = random.Random(seed)
    out = list(frames)
    for i in range(100, len(out)):
        if rng.random() >= 0.1:
            continue
        t, raw = out[i]
        how = rng.randrange(len(DAMAGE) + 1)
        if how == len(DAMAGE):
            out[i] = t, out[i - rng.randrange(50, 100)][1]
        else:
            pattern, repl = DAMAGE[how]
            out[i] = t, re.sub(pattern, repl, raw, count=1)
    return out


def test_the_shipped_sample_gives_the_same_events_book_and_candles_on_both_paths() -> None:
    frames = [(t, raw) for t, raw in read_frames(SAMPLE) if isinstance(raw, str)]
    settings = FeedSettings()
    assert len(frames) > 30_000
    assert _feed(settings, frames) == _general(settings, frames)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_damaged_market_gives_the_same_answers_on_both_paths(seed: int) -> None:
    frames = _damaged(_generated(3), seed)
    settings = _settings(frames)
    fast, general = _feed(settings, frames), _general(settings, frames)
    assert fast == general
    assert set(general["dropped"]) >= {  # type: ignore[call-overload]  # the damage was seen
        "nan_price", "non_positive_price", "bad_quantity", "crossed_book", "non_numeric",
        "bad_shape", "symbol_mismatch", "not_json", "time_backwards"}
