"""Feed benchmark: frames/s through parse → price book → candles → bus on one core, the p99 time
from frame receipt to a bus subscriber seeing the tick, and replay speed of the shipped sample.

Frames come from the synthetic market at Binance-like rates (book updates dominate, klines every
250 ms, mark price every second, ticker every second). Run: `python -m bench.feed [--quick]`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bench.common import Result, at_least, at_most, median_of, p99, timer
from engine.bus import Bus
from engine.clock import SimClock
from engine.events import BookTicker, Kline, MarkPrice, Ticker24h
from engine.market import marketgen
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.feed import Feed
from engine.market.recording import first_frame_time
from engine.market.replay import Replay
from engine.settings import FeedSettings

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "sample.jsonl.gz"
MARKET = (BookTicker, Kline, MarkPrice, Ticker24h)
LIVE_RATES = marketgen.Rates(book_per_s=10.0, kline_every_s=0.25, mark_every_s=1.0,
                             ticker_every_s=1.0)
BURST = 8  # frames handled between two loop turns in the latency run (a busy socket read)


def _frames(seconds: float) -> list[tuple[float, str]]:
    gen = marketgen.generate(hours=seconds / 3600, seed=11, rates=LIVE_RATES,
                             history_minutes=0, higher_candles=0)
    return [(t, raw) for t, raw in gen if isinstance(raw, str)]


def _feed() -> tuple[Feed, Bus]:
    settings = FeedSettings()
    bus = Bus()
    feed = Feed(settings, bus, SimClock(), PriceBook(), CandleStore(settings.max_candles))
    return feed, bus


def _throughput(frames: list[tuple[float, str]]) -> float:
    feed, bus = _feed()
    sub = bus.subscribe("bench", MARKET, capacity=len(frames) + 1)
    handle = feed.handle_frame
    start = timer()
    for t, raw in frames:
        handle(raw, t)
    elapsed = timer() - start
    assert not feed.dropped and len(sub) == len(frames), (feed.dropped, len(sub))
    return len(frames) / elapsed


async def _latency(frames: list[tuple[float, str]]) -> list[float]:
    feed, bus = _feed()
    sub = bus.subscribe("bench", MARKET, capacity=100_000)
    samples: list[float] = []
    done = asyncio.Event()

    async def subscriber() -> None:
        async for event in sub:
            samples.append(timer() - event.recv_time)  # type: ignore[attr-defined]
            if len(samples) == len(frames):
                done.set()

    task = asyncio.create_task(subscriber())
    for i, (_, raw) in enumerate(frames):
        feed.handle_frame(raw, timer())  # receive time on the benchmark's clock
        if i % BURST == BURST - 1:
            await asyncio.sleep(0)
    await done.wait()
    task.cancel()
    return samples


async def _replay_sample() -> tuple[float, float]:
    start = first_frame_time(SAMPLE) or 0.0
    clock = SimClock(start=start)
    feed, bus = _feed()
    feed.clock = clock
    bus.subscribe("bench", MARKET, capacity=1_000)
    replay = Replay(SAMPLE, feed, clock)
    t0 = timer()
    await replay.run()
    wall = timer() - t0
    return replay.frames / wall, (clock.time() - start) / wall


def run(quick: bool = False) -> list[Result]:
    """Measure the feed's throughput, receipt-to-subscriber latency and replay speed."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    frames = _frames(60 if quick else 600)
    runs = 3 if quick else 5
    fps, all_fps = median_of(lambda: _throughput(frames), runs=runs)

    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        lat_runs = [p99(runner.run(_latency(frames))) for _ in range(runs + 1)][1:]
        replay_fps, speedup = runner.run(_replay_sample())
    lat = sorted(lat_runs)[len(lat_runs) // 2]
    return [
        Result("feed.frames_per_second", round(fps), "frames/s", ">= 100000",
               at_least(fps, 100_000),
               f"{len(frames)} frames, median of {runs}: {[round(x) for x in all_fps]}"),
        Result("feed.receipt_to_subscriber_p99", round(lat * 1e6, 1), "us", "<= 1000",
               at_most(lat * 1e6, 1000), f"bursts of {BURST} frames per loop turn, uvloop"),
        Result("feed.replay_sample_frames_per_second", round(replay_fps), "frames/s", "", None,
               f"{SAMPLE.name}: {speedup:,.0f}x real time; a recorded day at the sample's "
               f"rate replays in ~{86400 / speedup:.0f} s"),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.name:40s} {r.value:>12,} {r.unit:9s} target {r.target or '-':10s} "
              f"{'' if r.met is None else ('met' if r.met else 'MISSED')}  {r.detail}")
