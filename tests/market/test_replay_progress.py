"""A replay's progress: frames counted from the file, speed and ETA, the bar, the 10 % lines."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

import pytest
from rich.console import Console
from structlog.testing import capture_logs

from engine.bus import Bus
from engine.clock import SimClock
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.feed import Feed
from engine.market.progress import ReplayProgress, count_frames
from engine.market.recording import first_frame_time
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

    counted = threading.Event()
    real = module.count_frames

    def slow_count(path: str) -> tuple[int, float | None, float | None]:
        counted.wait(60)  # the count ends only after the replay has
        return real(path)

    monkeypatch.setattr(module, "count_frames", slow_count)
    replay, progress = sample_replay()
    async with progress.shown(bar=False):
        await replay.run()
        counted.set()
    status = progress.status()
    assert status["frames_done"] == status["frames_total"] == replay.frames > 30_000


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
