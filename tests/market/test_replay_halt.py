"""A halt pauses a replay: no frame is consumed and simulated time stands still until trading
resumes; a recording notes the halt and resume instants, and a replay holds trading over the same
interval while its market goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from engine.bus import Bus
from engine.clock import SimClock
from engine.events import BookTicker
from engine.halt import TradingGate
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.feed import Feed
from engine.market.recording import FrameRecorder, iter_records, read_frames
from engine.market.replay import Replay
from engine.settings import FeedSettings
from tests.support.feed import T0, book_ticker

E = int(T0 * 1000)


def ticks(tmp_path: Path) -> Path:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"".join(
        orjson.dumps({"t": T0 + i, "raw": book_ticker("BTCUSDT", 1.0 + i, 1.1 + i,
                                                       E + i * 1000)}) + b"\n"
        for i in range(5)))
    return path


async def test_a_halted_replay_consumes_no_frame_and_its_time_stands_still(
    tmp_path: Path
) -> None:
    clock = SimClock(start=T0)
    s = FeedSettings(symbols=("BTCUSDT",))
    feed = Feed(s, Bus(), clock, PriceBook(), CandleStore(s.max_candles))
    seen: list[float] = []
    feed.bus.subscribe("watch", [BookTicker], handler=lambda events: seen.extend(
        e.bid for e in events))  # type: ignore[attr-defined]
    gate = TradingGate()
    gate.halt("storage (test)")
    replay = Replay(ticks(tmp_path), feed, clock, gate=gate)
    task = asyncio.create_task(replay.run())
    for _ in range(50):
        await asyncio.sleep(0)
    assert (replay.frames, seen, clock.time()) == (0, [], T0)

    gate.resume()
    await asyncio.wait_for(task, 5)
    assert replay.frames == 5 and seen == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert clock.time() == T0 + 4


def test_a_recording_notes_halt_and_resume_instants(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    recorder = FrameRecorder(path)
    recorder.write(book_ticker("BTCUSDT", 1.0, 1.1, E), T0)
    recorder.write_record("halt", {"halted": True, "reason": "storage (test)"}, T0 + 1)
    recorder.write_record("halt", {"halted": False, "reason": None}, T0 + 9)
    recorder.close()
    assert [(t, kind, item) for t, kind, item in iter_records(path) if kind == "halt"] == [
        (T0 + 1, "halt", {"halted": True, "reason": "storage (test)"}),
        (T0 + 9, "halt", {"halted": False, "reason": None})]
    assert [t for t, _ in read_frames(path)] == [T0]  # a replay's market skips them


async def test_a_replay_halts_trading_where_the_recorded_run_did_and_its_market_goes_on(
    tmp_path: Path
) -> None:
    path = tmp_path / "rec.jsonl"
    recorder = FrameRecorder(path)
    for i in range(5):
        recorder.write(book_ticker("BTCUSDT", 1.0 + i, 1.1 + i, E + i * 1000), T0 + i)
        if i == 1:
            recorder.write_record("halt", {"halted": True, "reason": "storage (x)"}, T0 + i)
        if i == 3:
            recorder.write_record("halt", {"halted": False, "reason": None}, T0 + i)
    recorder.close()
    clock = SimClock(start=T0)
    s = FeedSettings(symbols=("BTCUSDT",))
    feed = Feed(s, Bus(), clock, PriceBook(), CandleStore(s.max_candles))
    gate = TradingGate()
    states: list[tuple[float, bool, str | None]] = []
    gate.listen(lambda halted, reason: states.append((clock.time(), halted, reason)))
    replay = Replay(path, feed, clock, gate=gate)
    await asyncio.wait_for(replay.run(), 5)
    assert replay.frames == 5 and clock.time() == T0 + 4  # the market never stood still
    assert states == [(T0 + 1, True, "recorded (storage (x))"), (T0 + 3, False, None)]


def test_a_recorded_halt_and_a_storage_halt_release_only_themselves() -> None:
    gate = TradingGate()
    gate.halt("recorded (storage (x))", source="recorded")
    gate.halt("storage (disk full)")
    assert gate.halted and gate.storage_halted
    gate.resume()  # the writer: its rows are committed again
    assert gate.halted and not gate.storage_halted and gate.reason == "recorded (storage (x))"
    gate.resume(source="recorded")
    assert not gate.halted and gate.reason is None
