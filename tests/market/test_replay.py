"""Record and replay: the file format, the simulated clock following frames, the shipped sample."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import orjson
import pytest

from engine.bus import Bus
from engine.clock import SimClock
from engine.events import BookTicker, FeedStatus, Kline
from engine.market import marketgen
from engine.market.book import PriceBook
from engine.market.candles import Candle, CandleStore
from engine.market.feed import Feed
from engine.market.recording import first_frame_time, read_frames
from engine.market.replay import Replay
from engine.market.snapshot import take_snapshot
from engine.settings import FeedSettings
from tests.support.feed import T0, book_ticker, kline

SAMPLE = Path(__file__).parents[1] / "data" / "sample.jsonl.gz"
E = int(T0 * 1000)


def make_feed(clock: SimClock, record: str | None = None, **kw: object) -> Feed:
    s = FeedSettings(**kw)  # type: ignore[arg-type]
    return Feed(s, Bus(), clock, PriceBook(), CandleStore(s.max_candles), record_path=record)


@pytest.mark.parametrize("name", ["frames.jsonl", "frames.jsonl.gz"])
def test_recording_writes_each_raw_frame_with_its_receive_time(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    feed = make_feed(SimClock(start=T0), record=str(path), symbols=("BTCUSDT",))
    good = book_ticker("BTCUSDT", 1.0, 1.1, E)
    feed.handle_frame(good, T0 + 0.25)
    feed.handle_frame("not json at all", T0 + 0.5)  # bad frames are recorded too
    feed.apply_backfill("BTCUSDT", "1m", [Candle(T0 - 90, 1, 2, 0.5, 1.5, 3)], T0 + 0.75)
    feed.close()
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as fh:  # type: ignore[operator]
        lines = [orjson.loads(line) for line in fh]
    assert lines == [
        {"t": T0 + 0.25, "raw": good},
        {"t": T0 + 0.5, "raw": "not json at all"},
        {"t": T0 + 0.75, "backfill": {"symbol": "BTCUSDT", "interval": "1m",
                                      "candles": [[T0 - 90, 1, 2, 0.5, 1.5, 3]]}},
    ]


async def test_replay_advances_the_clock_to_each_frame_before_handling_it(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    m = T0 // 60 * 60
    lines = [(T0 + 1, book_ticker("BTCUSDT", 1.0, 1.1, E + 1000)),
             (T0 + 299, book_ticker("BTCUSDT", 2.0, 2.1, E + 299_000)),
             (T0 + 301, book_ticker("BTCUSDT", 3.0, 3.1, E + 301_000)),
             (T0 + 302, kline("BTCUSDT", Candle(m, 1, 2, 0.5, 1.5, 3), E + 302_000, True))]
    path.write_bytes(b"".join(orjson.dumps({"t": t, "raw": r}) + b"\n" for t, r in lines)
                     + b"this line is damaged\n")
    clock = SimClock(start=first_frame_time(path) or 0)
    feed = make_feed(clock, symbols=("BTCUSDT",))
    seen: list[tuple[float, float | None]] = []

    async def timer() -> None:  # a 5-minute job sees the market as it was at its time
        await clock.sleep_until(T0 + 300)
        q = feed.book.quote("BTCUSDT")
        seen.append((clock.time(), q.bid if q else None))

    sub = feed.bus.subscribe("t", [BookTicker, Kline, FeedStatus])
    task = asyncio.create_task(timer())
    await asyncio.sleep(0)
    await Replay(path, feed, clock).run()
    await task
    assert seen == [(T0 + 300, 2.0)]
    assert clock.time() == T0 + 302
    assert feed.candles.closed("BTCUSDT") == [Candle(m, 1, 2, 0.5, 1.5, 3)]
    got = sub.drain()
    assert [type(e).__name__ for e in got] == ["FeedStatus", "BookTicker", "BookTicker",
                                               "BookTicker", "Kline", "FeedStatus"]
    assert (got[0].state, got[-1].state) == ("connected", "disconnected")  # type: ignore[union-attr]
    assert feed.status()["mode"] == "replay"


async def test_replay_at_a_given_speed_waits_in_real_time(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"".join(
        orjson.dumps({"t": T0 + i, "raw": book_ticker("BTCUSDT", 1.0, 1.1, E + i * 1000)}) + b"\n"
        for i in range(3)))
    clock = SimClock(start=T0)
    replay = Replay(path, make_feed(clock, symbols=("BTCUSDT",)), clock, speed=100.0)
    wall = replay._wall.monotonic()
    await replay.run()
    assert replay._wall.monotonic() - wall >= 0.02 - 1e-3  # 2 recorded seconds at 100x
    with pytest.raises(ValueError):
        Replay(path, replay.feed, clock, speed=0)


def test_market_generator_is_seeded_and_shaped_like_binance() -> None:
    a = list(marketgen.generate(("BTCUSDT", "DOGEUSDT"), hours=0.05, seed=3, history_minutes=30,
                                higher_candles=5))
    b = list(marketgen.generate(("BTCUSDT", "DOGEUSDT"), hours=0.05, seed=3, history_minutes=30,
                                higher_candles=5))
    assert a == b
    backfills = [item for _, item in a if isinstance(item, dict)]
    assert {(r["symbol"], r["interval"], len(r["candles"])) for r in backfills} == {
        (s, tf, n) for s in ("BTCUSDT", "DOGEUSDT") for tf, n in (("1m", 30), ("15m", 5),
                                                                 ("4h", 5))}
    frames = [(t, item) for t, item in a if isinstance(item, str)]
    times = [t for t, _ in frames]
    assert times == sorted(times)
    kinds = {orjson.loads(raw)["stream"].split("@", 1)[1] for _, raw in frames}
    assert kinds == {"bookTicker", "kline_1m", "markPrice@1s", "ticker"}
    book = next(orjson.loads(raw)["data"] for _, raw in frames if "bookTicker" in raw)
    assert list(book) == ["e", "u", "E", "T", "s", "b", "B", "a", "A"]
    assert all(isinstance(book[k], str) for k in "bBaA")


async def test_the_shipped_sample_replays_cleanly_into_a_full_snapshot() -> None:
    assert SAMPLE.stat().st_size < 2_000_000
    start = first_frame_time(SAMPLE)
    assert start is not None
    clock = SimClock(start=start)
    feed = make_feed(clock)
    cycles: list[float] = []

    async def every_five_minutes() -> None:
        while True:
            await clock.sleep_until((clock.time() // 300 + 1) * 300)
            cycles.append(clock.time())

    task = asyncio.create_task(every_five_minutes())
    await asyncio.sleep(0)
    await Replay(SAMPLE, feed, clock).run()
    task.cancel()
    settings = feed.settings
    assert feed.dropped == {}
    assert len(cycles) == 18  # 1.5 hours of 5-minute cycles, at the recorded times
    assert all(t % 300 == 0 for t in cycles)
    snap = take_snapshot(feed.book, feed.candles, settings, clock.time())
    assert snap.stale == ()
    for sym in settings.symbols:
        closed = feed.candles.closed(sym)
        assert [c.open_time for c in closed] == [closed[0].open_time + 60 * i
                                                 for i in range(len(closed))]  # no holes
        for tf in ("1m", *settings.timeframes):
            assert all(v is not None for v in snap.symbols[sym].indicators[tf].values()), (sym, tf)


def test_marketgen_cli_writes_a_replayable_file(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl.gz"
    assert marketgen.main(["--hours", "0.02", "--out", str(out), "--symbols", "BTCUSDT",
                           "--history-minutes", "10", "--higher-candles", "0"]) == 0
    items = list(read_frames(out))
    assert isinstance(items[0][1], dict) and items[0][1]["interval"] == "1m"
    assert sum(isinstance(item, str) for _, item in items) > 20



def _ticks_file(tmp_path: Path) -> Path:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"".join(
        orjson.dumps({"t": T0 + i / 10, "raw": book_ticker("BTCUSDT", 1.0 + i, 1.1 + i,
                                                            E + i * 100)}) + b"\n"
        for i in range(40)))
    return path


EXPECTED = [(T0 + i / 10, 1.0 + i) for i in range(40)]


async def test_a_bus_handler_sees_each_record_before_time_moves_on(tmp_path: Path) -> None:
    """The replay takes no loop turn per frame; it flushes the bus's handlers (the broker's
    trigger watch) after each record instead."""
    clock = SimClock(start=T0)
    feed = make_feed(clock, symbols=("BTCUSDT",))
    handled: list[tuple[float, float]] = []
    feed.bus.subscribe("watch", [BookTicker], handler=lambda events: handled.extend(
        (clock.time(), e.bid) for e in events))  # type: ignore[attr-defined]
    await Replay(_ticks_file(tmp_path), feed, clock).run()
    assert handled == EXPECTED


async def test_a_subscriber_task_a_record_woke_runs_at_that_records_time(tmp_path: Path) -> None:
    clock = SimClock(start=T0)
    feed = make_feed(clock, symbols=("BTCUSDT",))
    sub = feed.bus.subscribe("reader", [BookTicker])
    read: list[tuple[float, float]] = []

    async def reader() -> None:
        while True:
            for e in await sub.get_batch(100):
                read.append((clock.time(), e.bid))  # type: ignore[attr-defined]

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    await Replay(_ticks_file(tmp_path), feed, clock).run()
    task.cancel()
    assert read == EXPECTED
