"""Batch lines of a backtest stream: one clock move per time, path frames only when wanted."""

from __future__ import annotations

import orjson

from engine.bus import Bus
from engine.clock import SimClock
from engine.events import BookTicker
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.feed import Feed
from engine.market.history import write_recording
from engine.market.replay import Replay
from engine.settings import FeedSettings

T = 1_790_812_799.999


def _book(u: int, bid: float) -> str:
    data = {"e": "bookTicker", "u": u, "E": 1, "T": 1, "s": "BTCUSDT", "b": repr(bid), "B": "1",
            "a": repr(bid + 0.1), "A": "1"}
    return orjson.dumps({"stream": "btcusdt@bookTicker", "data": data}).decode()


async def _replay(tmp_path, wanted: bool) -> tuple[Feed, list[float], Replay]:
    path = tmp_path / f"s{wanted}.jsonl.gz"
    batch = [{"path": "BTCUSDT", "frames": [_book(1, 100.0), _book(2, 90.0), _book(3, 110.0)]},
             _book(4, 105.0)]
    write_recording(path, iter([(T, batch), (T + 60, [_book(5, 106.0)])]))
    settings = FeedSettings(symbols=("BTCUSDT",), market="futures")
    clock, bus = SimClock(T), Bus()
    sub = bus.subscribe("test", [BookTicker], capacity=100)
    feed = Feed(settings, bus, clock, PriceBook(), CandleStore(100))
    replay = Replay(path, feed, clock, path_wanted=lambda symbol: wanted)
    await replay.run()
    bids = [e.bid for e in await sub.get_batch(100)]
    return feed, bids, replay


async def test_path_frames_reach_the_feed_only_when_wanted_and_the_book_ends_the_same(tmp_path):
    full, full_bids, a = await _replay(tmp_path, True)
    lean, lean_bids, b = await _replay(tmp_path, False)
    assert full_bids == [100.0, 90.0, 110.0, 105.0, 106.0]  # the minute's path, in order
    assert lean_bids == [105.0, 106.0]  # close frames only
    assert (a.paths_skipped, b.paths_skipped) == (0, 1)
    assert full.book.quote("BTCUSDT") == lean.book.quote("BTCUSDT")
    assert a.frames == b.frames == 2  # a batch line counts once (as the progress counts it)
