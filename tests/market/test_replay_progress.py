"""A replay's progress: frames counted from the file, speed and ETA, the bar, the 10 % lines."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from structlog.testing import capture_logs

from engine.bus import Bus
from engine.clock import SimClock
from engine.market import framecount
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.feed import Feed
from engine.market.progress import ReplayProgress, count_frames, count_in_process
from engine.market.recording import KINDS, first_frame_time
from engine.market.replay import Replay
from engine.settings import FeedSettings

SAMPLE = Path(__file__).parents[1] / "data" / "sample.jsonl.gz"


class FakeWall:
    """A wall clock the test moves by hand (only `monotonic` and `sleep` are used)."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


class FakeReplay:
    def __init__(self, path: Path, clock: SimClock) -> None:
        self.path, self.clock, self.frames = str(path), clock, 0


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "rec.jsonl"
    lines = [f'{{"t": {1000 + i}, "raw": "x"}}' for i in range(100)]
    lines.insert(50, '{"t": 1050.5, "cycle": {"cycle_id": "c"}}')  # not a frame
    path.write_text("\n".join(lines) + "\n")
    return path


def test_count_frames_counts_market_lines_and_their_time_span(tmp_path: Path) -> None:
    assert count_frames(_file(tmp_path)) == (100, 1000.0, 1099.0)


def sample_replay() -> tuple[Replay, ReplayProgress]:
    """The shipped sample's replay through a bare feed, and its progress."""
    clock = SimClock(first_frame_time(SAMPLE))
    s = FeedSettings()
    feed = Feed(s, Bus(), clock, PriceBook(), CandleStore(s.max_candles))
    replay = Replay(SAMPLE, feed, clock)
    return replay, ReplayProgress(replay)


async def test_the_sample_replays_exactly_the_frames_counted() -> None:
    replay, progress = sample_replay()
    async with progress.shown(bar=False):
        await replay.run()
    status = progress.status()
    assert status["frames_done"] == status["frames_total"] == replay.frames > 30_000
    assert status["percent"] == 100.0 and status["eta_s"] == 0.0 and status["finished"]
    assert status["sim_total_s"] == status["sim_elapsed_s"] == 5400.0  # 1.5 h


async def test_a_replay_that_ends_before_its_count_still_gets_the_total(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.market.progress as module

    counted = asyncio.Event()
    real = module.count_in_process

    async def slow_count(path: str) -> tuple[int, float | None, float | None]:
        await counted.wait()  # the count ends only after the replay has
        return await real(path)

    monkeypatch.setattr(module, "count_in_process", slow_count)
    replay, progress = sample_replay()
    async with progress.shown(bar=False):
        await replay.run()
        counted.set()
    status = progress.status()
    assert status["frames_done"] == status["frames_total"] == replay.frames > 30_000


def test_count_frames_agrees_with_a_line_by_line_count_across_blocks(tmp_path: Path) -> None:
    """Blocks of a megabyte: lines cut at a block's end, session lines among the frames."""
    rng = random.Random(7)
    lines, expected = [], 0
    for i in range(40_000):
        t = 1000 + i / 10
        kind = rng.choices(["raw", "backfill", "batch", "llm", "cycle", "pace"],
                           weights=[90, 2, 2, 2, 2, 2])[0]
        item: object = {"raw": json.dumps({"e": "bookTicker", "s": "BTCUSDT", "pad": "x" * 40}),
                        "backfill": {"symbol": "BTCUSDT", "rows": [[1, 2]]},
                        "batch": ['{"e":"kline"}', {"path": "BTCUSDT", "frames": ['{"b":1}']}],
                        "llm": {"trader": "a", "raw": "{\"t\": 1}"}, "cycle": {"cycle_id": "c"},
                        "pace": {"point": "p"}}[kind]
        lines.append(json.dumps({"t": t, kind: item}))
        expected += kind in ("raw", "backfill", "batch")
    path = tmp_path / "big.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines))  # no newline after the last line
    assert path.stat().st_size > 0 and len("\n".join(lines)) > 3 * (1 << 20)
    frames = [json.loads(line)["t"] for line in lines
              if any(k in json.loads(line) for k in ("raw", "backfill", "batch"))]
    assert count_frames(path) == (expected, frames[0], frames[-1])


def test_the_counter_knows_the_line_kinds_of_a_recording() -> None:
    """framecount imports nothing from the engine, so it keeps its own copy of the kinds."""
    assert framecount._KINDS == KINDS


async def test_the_count_runs_in_a_process_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.market.progress as module

    def not_here(path: str) -> None:
        raise AssertionError("counted in the engine's process")

    monkeypatch.setattr(module, "count_frames", not_here)
    assert await count_in_process(SAMPLE) == framecount.count_frames(SAMPLE)


async def test_a_cancelled_count_kills_its_process(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)  # opening it for reading blocks until a writer comes: none will
    started: asyncio.Queue[asyncio.subprocess.Process] = asyncio.Queue()
    real = asyncio.create_subprocess_exec

    async def spawn(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await real(*args, **kwargs)
        started.put_nowait(proc)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)
    task = asyncio.create_task(count_in_process(fifo))
    proc = await started.get()
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()
    assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGKILL


async def test_a_failed_count_says_why_and_no_process_counts_in_a_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuntimeError, match=r"no-such\.jsonl failed \(exit 1\): FileNotFoundError"):
        await count_in_process(tmp_path / "no-such.jsonl")

    async def cannot_start(*args: Any, **kwargs: Any) -> None:
        raise OSError("no processes here")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", cannot_start)
    assert await count_in_process(_file(tmp_path)) == (100, 1000.0, 1099.0)


async def test_status_gives_speed_and_eta_from_frames_and_simulated_time(tmp_path: Path) -> None:
    clock, wall = SimClock(1000.0), FakeWall()
    replay = FakeReplay(_file(tmp_path), clock)
    progress = ReplayProgress(replay, wall)  # type: ignore[arg-type]
    await progress.count()
    replay.frames = 25
    await clock.advance_to(1024.0)
    wall.now += 2.0  # 2 s of wall time for 24 s of market: 12x, 12.5 frames/s
    s = progress.status()
    assert (s["frames_done"], s["frames_total"], s["percent"]) == (25, 100, 25.0)
    assert s["sim_elapsed_s"] == 24.0 and s["sim_total_s"] == 99.0
    assert s["speed_x"] == 12.0 and s["frames_per_s"] == 12.5
    assert s["eta_s"] == 6.0  # 75 frames left at 12.5 frames/s
    assert s["sim_time"] == "1970-01-01T00:17:04+00:00"


async def test_a_line_is_logged_at_each_10_percent_mark_crossed(tmp_path: Path) -> None:
    clock, wall = SimClock(1000.0), FakeWall()
    replay = FakeReplay(_file(tmp_path), clock)
    progress = ReplayProgress(replay, wall)  # type: ignore[arg-type]
    await progress.count()
    with capture_logs() as logs:
        async with progress.shown(bar=False):
            for frames in range(0, 101, 5):
                replay.frames = frames
                wall.now += 0.1
                for _ in range(5):
                    await asyncio.sleep(0)
    lines = [e for e in logs if e["event"] == "replay.progress"]
    assert [e["decile"] for e in lines] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert lines[-1]["percent"] == 100.0 and lines[-1]["frames_done"] == 100


async def test_the_bar_shows_frames_simulated_time_speed_and_eta(tmp_path: Path) -> None:
    clock, wall = SimClock(1000.0), FakeWall()
    replay = FakeReplay(_file(tmp_path), clock)
    progress = ReplayProgress(replay, wall)  # type: ignore[arg-type]
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    await progress.count()
    task = asyncio.create_task(progress.watch(bar=True, console=console))
    replay.frames = 40
    await clock.advance_to(1040.0)
    wall.now += 4.0
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait({task})
    text = out.getvalue()
    assert "40/100 frames" in text and "sim 1970-01-01 00:17:20" in text
    assert "10x" in text and "ETA 6s" in text
