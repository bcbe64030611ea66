"""Feed benchmark: the feed's pipeline against floors measured in the same run.

* `feed.vs_parse_floor`: frames/s through parse → price book → candles → bus (`Feed.handle_frame`,
  a subscriber draining its queue every 64 frames, as the loop does between two reads) over frames/s
  of a bare typed msgspec decoder (`engine.market.frames.frame_decoder(streams)`, the feed's own:
  the same frames decoded into the same typed structs and nothing else). The two alternate every
  1,024 frames, so both see the same load, timed in thread CPU time (both are pure computation);
  the figure is the median of the runs' ratios.
* `feed.ws_vs_bare_client`: the same frames sent over a real websocket on 127.0.0.1 by a server in
  another process (frames pre-encoded, written in large chunks, so the server is not what is
  measured): the engine's feed (`Feed.run`: connect, read, parse, book, candles, bus) over a bare
  `websockets` client reading each message's bytes as the feed does (`recv(decode=False)`) and
  doing only the typed decode of them, one after the other, each
  timed in its thread's CPU time (what the client spends; the wall-clock figures, which also
  carry the waits on a shared machine, are in the detail), median of the per-pair ratios.
* receipt-to-subscriber p99 and the replay speed of the shipped sample, for information.

Frames come from the synthetic market at Binance-like rates (book updates dominate, klines every
250 ms, mark price every second, ticker every second). Run: `python -m bench.feed [--quick]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Result, at_least, p99, timer
from engine.bus import Bus
from engine.clock import LiveClock, SimClock
from engine.events import BookTicker, Kline, MarkPrice, Ticker24h
from engine.market import marketgen
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.feed import Feed
from engine.market.frames import frame_decoder, stream_names
from engine.market.recording import first_frame_time
from engine.market.replay import Replay
from engine.settings import FeedSettings

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "sample.jsonl.gz"
MARKET = (BookTicker, Kline, MarkPrice, Ticker24h)
LIVE_RATES = marketgen.Rates(book_per_s=10.0, kline_every_s=0.25, mark_every_s=1.0,
                             ticker_every_s=1.0)
BURST = 8  # frames handled between two loop turns in the latency run (a busy socket read)
DRAIN_EVERY = 64  # frames between two drains of the subscriber (feed.YIELD_EVERY)
CHUNK = 1024  # frames per alternation between the floor and the pipeline
cpu_timer = time.thread_time  # the ratios' clock (see _interleaved and _paired)
PARSE_TARGET = 0.30
WS_TARGET = 0.80


def _frames(seconds: float) -> list[tuple[float, str]]:
    gen = marketgen.generate(hours=seconds / 3600, seed=11, rates=LIVE_RATES,
                             history_minutes=0, higher_candles=0)
    return [(t, raw) for t, raw in gen if isinstance(raw, str)]


def _settings(frames: list[tuple[float, str]], **kw: object) -> FeedSettings:
    names = {raw[11:raw.index('"', 11)] for _, raw in frames[:2000]}  # {"stream":"<name>"
    symbols = tuple(sorted({n.split("@")[0].upper() for n in names}))
    return FeedSettings(symbols=symbols, **kw)  # type: ignore[arg-type,unused-ignore]


def _feed(settings: FeedSettings) -> tuple[Feed, Bus]:
    bus = Bus()
    feed = Feed(settings, bus, SimClock(), PriceBook(), CandleStore(settings.max_candles))
    return feed, bus


# ---------------------------------------------------------------- in process: parse floor


def _interleaved(frames: list[tuple[float, str]], settings: FeedSettings) -> tuple[float, float]:
    """Return (pipeline, floor) frames per second of thread CPU time over the same frames,
    measured in alternating chunks of CHUNK frames (a few ms each), so that both see the same
    load on a shared machine; CPU time, so that a chunk during which another process held the
    core is not counted against either (both are pure computation: nothing waits)."""
    feed, bus = _feed(settings)
    sub = bus.subscribe("bench", MARKET, capacity=DRAIN_EVERY * 4)
    handle, drain = feed.handle_frame, sub.drain
    decode = frame_decoder(stream_names(settings.symbols, settings.market)).decode
    seen = 0
    floor_s = pipeline_s = 0.0
    for i in range(0, len(frames), CHUNK):
        part = frames[i:i + CHUNK]
        t0 = cpu_timer()
        for _, raw in part:
            decode(raw)
        t1 = cpu_timer()
        for j in range(0, len(part), DRAIN_EVERY):
            for t, raw in part[j:j + DRAIN_EVERY]:
                handle(raw, t)
            seen += len(drain())
        t2 = cpu_timer()
        floor_s += t1 - t0
        pipeline_s += t2 - t1
    assert not feed.dropped and seen == len(frames), (feed.dropped, seen)
    return len(frames) / pipeline_s, len(frames) / floor_s


Rates = tuple[float, float]  # (frames per second of the client's thread CPU time, frames/s)


def _paired(runs: int, floor: Callable[[], Rates], measured: Callable[[], Rates],
            ) -> tuple[float, list[float], list[float], list[Rates], list[Rates]]:
    """Run floor and measured back to back `runs` times after one warm-up pair; return the
    median ratio of their CPU-time rates, those ratios, the wall-clock ones, the floors and the
    measured figures."""
    floor()
    measured()
    floors, values = [], []
    for _ in range(runs):
        floors.append(floor())
        values.append(measured())
    ratios = [v[0] / f[0] for v, f in zip(values, floors, strict=True)]
    wall = [v[1] / f[1] for v, f in zip(values, floors, strict=True)]
    return statistics.median(ratios), ratios, wall, floors, values


# ---------------------------------------------------------------- over a loopback websocket


def _wire(raws: list[str]) -> bytes:
    """Return the frames as unmasked server-to-client websocket text frames (RFC 6455)."""
    out = bytearray()
    for raw in raws:
        payload = raw.encode()
        n = len(payload)
        if n < 126:
            out += struct.pack("!BB", 0x81, n)
        elif n < 65536:
            out += struct.pack("!BBH", 0x81, 126, n)
        else:
            out += struct.pack("!BBQ", 0x81, 127, n)
        out += payload
    return bytes(out)


def _serve(sock: socket.socket, raws: list[str]) -> None:
    """Child process: accept websocket clients; send each every frame, fast, then wait."""
    from websockets.asyncio.server import ServerConnection, serve

    wire = _wire(raws)

    async def handler(ws: ServerConnection) -> None:
        transport = ws.transport
        for i in range(0, len(wire), 1 << 20):  # the frames, pre-encoded, 1 MB writes
            transport.write(wire[i:i + (1 << 20)])
            await ws.drain()
        with contextlib.suppress(Exception):
            await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, sock=sock, compression=None, max_size=None):
            await asyncio.Future()

    asyncio.run(main())


async def _bare_client(url: str, n: int, streams: list[str]) -> Rates:
    from websockets.asyncio.client import connect

    decode = frame_decoder(streams).decode
    async with connect(url, compression=None, max_size=2**20) as ws:
        recv = ws.recv
        cpu, start = cpu_timer(), timer()
        for _ in range(n):
            decode(await recv(False))  # the frame's bytes, as the engine's Feed._read reads them
        return n / (cpu_timer() - cpu), n / (timer() - start)


async def _engine_client(url: str, n: int, settings: FeedSettings) -> Rates:
    settings = settings.model_copy(update={"futures_ws_url": url, "backfill_candles": 0,
                                           "backfill_higher_candles": 0})
    bus = Bus()
    feed = Feed(settings, bus, LiveClock(), PriceBook(), CandleStore(settings.max_candles))
    sub = bus.subscribe("bench", MARKET, capacity=100_000)
    task = asyncio.create_task(feed.run())
    got = 0
    first = await sub.get()  # the clocks start at the first event, as the bare client's do
    cpu, start = cpu_timer(), timer()
    got = 1
    del first
    while got < n:
        got += len(await sub.get_batch(10_000))
    cpu, elapsed = cpu_timer() - cpu, timer() - start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not feed.dropped, feed.dropped
    return n / cpu, n / elapsed


def _ws_ratio(frames: list[tuple[float, str]], settings: FeedSettings,
              runs: int) -> tuple[float, list[float], list[float], list[Rates], list[Rates]]:
    import uvloop

    raws = [raw for _, raw in frames]
    # Only the streams the feed subscribes to, which is all of them here.
    wanted = set(stream_names(settings.symbols, settings.market))
    raws = [r for r in raws if r[11:r.index('"', 11)] in wanted]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}"
    ctx = multiprocessing.get_context("fork")
    server = ctx.Process(target=_serve, args=(sock, raws), daemon=True)
    server.start()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            streams = sorted(wanted)
            return _paired(runs, lambda: runner.run(_bare_client(url, len(raws), streams)),
                           lambda: runner.run(_engine_client(url, len(raws), settings)))
    finally:
        server.terminate()
        server.join(5)
        sock.close()


# ---------------------------------------------------------------- latency and replay


async def _latency(frames: list[tuple[float, str]], settings: FeedSettings) -> list[float]:
    feed, bus = _feed(settings)
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
    settings = FeedSettings()
    bus = Bus()
    feed = Feed(settings, bus, clock, PriceBook(), CandleStore(settings.max_candles))
    bus.subscribe("bench", MARKET, capacity=1_000)
    replay = Replay(SAMPLE, feed, clock)
    t0 = timer()
    await replay.run()
    wall = timer() - t0
    return replay.frames / wall, (clock.time() - start) / wall


def run(quick: bool = False, tiny: bool = False) -> list[Result]:
    """Measure the feed against the typed-decode floor, in process and over a websocket
    (`tiny`: a smoke pass of the workload, figures meaningless)."""
    import structlog
    import uvloop

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    frames = _frames(10 if tiny else 60 if quick else 300)
    settings = _settings(frames)
    runs = 1 if tiny else 3 if quick else 9
    _interleaved(frames, settings)  # warm-up
    pairs = [_interleaved(frames, settings) for _ in range(runs)]
    values, floors = [p for p, _ in pairs], [f for _, f in pairs]
    ratios = [p / f for p, f in pairs]
    ratio = statistics.median(ratios)
    ws_frames = frames if quick or tiny else _frames(600)
    ws, ws_ratios, ws_wall, bare, engine = _ws_ratio(ws_frames, settings,
                                                     1 if tiny else 3 if quick else 7)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        lat_runs = [p99(runner.run(_latency(frames, settings))) for _ in range(runs + 1)][1:]
        replay_fps, speedup = runner.run(_replay_sample())
    lat = statistics.median(lat_runs)
    med = statistics.median
    return [
        Result("feed.vs_parse_floor", round(ratio, 3), "x", f">= {PARSE_TARGET}",
               at_least(ratio, PARSE_TARGET),
               f"{len(frames)} frames of {len(settings.symbols)} symbols; pipeline "
               f"{med(values):,.0f} frames per CPU second over a bare typed msgspec decode at "
               f"{med(floors):,.0f}; per-pair ratios {[round(r, 3) for r in ratios]}",
               workload=len(frames)),
        Result("feed.ws_vs_bare_client", round(ws, 3), "x", f">= {WS_TARGET}",
               at_least(ws, WS_TARGET),
               f"{len(ws_frames)} frames over ws://127.0.0.1 from a server process; Feed.run "
               f"{med(e[0] for e in engine):,.0f} frames per CPU second of the client's thread "
               f"over a bare websockets client decoding each message's bytes at "
               f"{med(b[0] for b in bare):,.0f}; per-pair ratios "
               f"{[round(r, 3) for r in ws_ratios]}; wall clock: "
               f"{med(e[1] for e in engine):,.0f} over {med(b[1] for b in bare):,.0f} frames/s, "
               f"median ratio {med(ws_wall):.3f}", workload=len(ws_frames)),
        Result("feed.frames_per_second", round(med(values)), "frames/s", "", None,
               "the pipeline's figure behind feed.vs_parse_floor, per second of thread CPU "
               "time (absolute: depends on the host)"),
        Result("feed.receipt_to_subscriber_p99", round(lat * 1e6, 1), "us", "", None,
               f"bursts of {BURST} frames per loop turn, uvloop; median of {runs}"),
        Result("feed.replay_sample_frames_per_second", round(replay_fps), "frames/s", "", None,
               f"{SAMPLE.name}: {speedup:,.0f}x real time; a recorded day at the sample's "
               f"rate replays in ~{86400 / speedup:.0f} s"),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.name:40s} {r.value:>12,} {r.unit:9s} target {r.target or '-':10s} "
              f"{'' if r.met is None else ('met' if r.met else 'MISSED')}  {r.detail}")
