"""Soak: a generated 24-hour market replayed at max speed through the whole engine, in-process.

Feed → bus → broker and 288 five-minute cycles of every configured trader (the three LLM traders
are the real SDK clients over aiohttp, sending each request over a socket to a local server in a
process of its own that answers with the hand-written fixtures of engine/traders/fixtures,
bench.llm_fixtures; the baselines run for real) → writer → Postgres.
Measured, each the median of 3 runs (a fresh database each):
* `soak.vs_feed_replay`: frames/s of the replay through the whole engine (from the replay's first
  frame to its last) over frames/s of a feed-only replay of the same file (`Replay` → `Feed` →
  price book, candles and bus, no subscriber) run right after it in the same process: >= 0.60;
* `soak.rss_growth_hour1_to_end`: resident memory from simulated hour 1 to the end of the
  replay, the worst of the runs: <= 2 %;
* `soak.loop_lag_p99_over_floor_ms`: the 99th percentile of the engine's own loop-lag samples
  (`engine.loop_monitor`, on `time.perf_counter`; every sample is also kept here) while the
  replay runs, minus the same percentile of an idle loop sampled the same way in a sibling
  process during the same run: <= 2 ms;
* cycles run (all 288 `ok`), rows the writer was handed per table against `select count(*)`
  afterwards (must be equal), wall time; the resident memory of the leaderboard's worker process
  (engine.paper.board_worker, a process of its own), hourly from its start, for information.

The market comes from engine.market.marketgen, one generator per symbol at that symbol's own book-
update rate, merged in receive-time order; the file is cached under `ARENA_BENCH_CACHE` (default
~/.cache/arena-bench) keyed by its parameters and the generator's source, so reruns skip it.
Postgres: a scratch database on TEST_DATABASE_URL when set, else an embedded pgserver in a temporary
directory. Run: `python -m bench.soak [--quick]`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import heapq
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.common import Result, schedstat, timer
from bench.llm_fixtures import FixtureProcess
from bench.soak_results import results as _results
from bench.writer import _scratch_database
from engine.events import CycleFinished, DecisionMade, FeedStatus
from engine.market import marketgen
from engine.settings import Secrets, Settings, load_settings
from engine.store.rows import ROW_OF, TABLES

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_FILE = ROOT / "settings.toml"
# Binance sends bookTicker in real time (hundreds a second for BTC); these are thinned to keep a
# day's file a few hundred MB, busier symbols busier. Klines every 1 s (Binance: 250 ms; the
# generator steps in whole seconds), mark price every 1 s and the 24 h ticker every 2 s, as
# Binance's USD-M streams do.
BOOK_PER_S = {"BTCUSDT": 10.0, "ETHUSDT": 8.0, "SOLUSDT": 5.0, "BNBUSDT": 3.0, "XRPUSDT": 4.0,
              "DOGEUSDT": 4.0}
DEFAULT_BOOK_PER_S = 3.0
KLINE_EVERY_S, MARK_EVERY_S, TICKER_EVERY_S = 1.0, 1.0, 2.0
SEED = 24
RUNS = 3


# ---------------------------------------------------------------- the market file


def _rates(symbol: str) -> marketgen.Rates:
    return marketgen.Rates(book_per_s=BOOK_PER_S.get(symbol, DEFAULT_BOOK_PER_S),
                           kline_every_s=KLINE_EVERY_S, mark_every_s=MARK_EVERY_S,
                           ticker_every_s=TICKER_EVERY_S)


def cache_dir() -> Path:
    """Return the directory generated market files are cached in."""
    default = Path.home() / ".cache" / "arena-bench"
    return Path(os.environ.get("ARENA_BENCH_CACHE") or default)


def market_file(symbols: tuple[str, ...], hours: float) -> tuple[Path, bool]:
    """Return the cached market file for these parameters (generating it first if needed)."""
    params = {"symbols": symbols, "hours": hours, "seed": SEED, "start": marketgen.DEFAULT_START,
              "rates": {s: dataclasses.astuple(_rates(s)) for s in symbols},
              "marketgen": hashlib.sha256(Path(marketgen.__file__).read_bytes()).hexdigest()}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"soak-{hours:g}h-{len(symbols)}sym-{key}.jsonl.gz"
    if path.exists():
        return path, True
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    gens = [marketgen.generate((s,), hours=hours, seed=SEED + i, rates=_rates(s),
                               start=marketgen.DEFAULT_START) for i, s in enumerate(symbols)]
    # gzip level 1: level 9 would double the generation time for a cache file.
    with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                    compresslevel=1, mtime=0) as fh:
        for t, item in heapq.merge(*gens, key=lambda rec: rec[0]):
            fh.write(orjson.dumps({"t": t, "raw" if isinstance(item, str) else "backfill": item}))
            fh.write(b"\n")
    partial.rename(path)
    return path, False


# ---------------------------------------------------------------- watching the engine


def rss_mb(pid: int | str = "self") -> float:
    """Return a process's resident memory in MB (VmRSS of /proc/<pid>/status; this one's)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


class Probe:
    """Counts what the writer is handed per table, samples RSS at sim-time hours."""

    def __init__(self, engine: Any, server: FixtureProcess, hours: int) -> None:
        bus = engine.bus
        # The same event types the writer subscribes to, lossless: every row it is handed.
        self._rows_sub = bus.subscribe("bench.soak.rows", tuple(ROW_OF), policy="block",
                                       capacity=1_000_000)
        self._feed_sub = bus.subscribe("bench.soak.feed", (FeedStatus,), capacity=1_000)
        self._server = server
        self.hours = hours
        self.rows: Counter[str] = Counter()
        self.cycles: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()
        self.llm_requests: Counter[str] = Counter()
        self.rss: dict[int, float] = {}
        self._engine = engine
        # the leaderboard's worker process (engine.paper.board_worker), from its start on
        self.worker_rss: dict[int, float] = {}
        self.replay_start_wall: float | None = None
        self.replay_done_wall: float | None = None
        # The loop thread's (seconds on a core, seconds waiting for one) at the start and the end.
        self.replay_sched: list[tuple[float, float]] = []
        self.lags: list[float] = []  # loop-lag samples (seconds) while the replay runs

    def _take(self, event: object) -> None:
        self.rows[ROW_OF[type(event)][0]] += 1
        if type(event) is CycleFinished:
            self.cycles[event.status] += 1
        elif type(event) is DecisionMade:
            self.decisions[event.trader] += 1
            if not event.valid:
                self.invalid[event.trader] += 1

    async def count_rows(self) -> None:
        async for event in self._rows_sub:
            self._take(event)

    def drain(self) -> None:
        """Count what is still queued (called once the engine has stopped)."""
        for event in self._rows_sub.drain():
            self._take(event)

    def count_requests(self) -> None:
        """Count the LLM requests the fixture server answered (once the engine has stopped: the
        call is a blocking HTTP request)."""
        self.llm_requests.update(self._server.served())

    async def sample_hours(self, clock: Any, start: float) -> None:
        for hour in range(1, self.hours):
            await clock.sleep_until(start + hour * 3600)
            self.rss[hour] = rss_mb()
            self._sample_worker(hour)

    def _sample_worker(self, hour: int) -> None:
        broker = getattr(self._engine, "broker", None)
        pids = broker.board.worker.pids() if broker is not None else ()
        if pids:
            self.worker_rss[hour] = sum(rss_mb(pid) for pid in pids)

    def watch_loop_lag(self, monitor: Any) -> None:
        """Keep every lag sample the engine's loop monitor takes while the replay runs."""
        observe = monitor.observe

        def observe_and_keep(lag: float) -> None:
            if self.replay_start_wall is not None and self.replay_done_wall is None:
                self.lags.append(lag)
            observe(lag)

        monitor.observe = observe_and_keep

    async def sample_end_of_replay(self) -> None:
        async for event in self._feed_sub:
            assert isinstance(event, FeedStatus)
            if event.state == "connected" and event.detail == "replay":
                self.replay_start_wall = timer()
                self.replay_sched.append(schedstat())
            if event.state == "disconnected" and "replay finished" in event.detail:
                self.rss[self.hours] = rss_mb()
                self._sample_worker(self.hours)
                self.replay_done_wall = timer()
                self.replay_sched.append(schedstat())
                return


# ---------------------------------------------------------------- the run


def soak_settings(workdir: Path, llm: FixtureProcess | None = None) -> Settings:
    """Return the repository's settings with the control API off, the spill file in workdir and
    (given `llm`) the three LLM providers' base URLs on the fixture server."""
    return load_settings(SETTINGS_FILE, overrides={
        **(llm.base_urls() if llm is not None else {}), "control.enabled": False,
        "database.spill_path": str(workdir / "spill.jsonl"),
        "database.embedded_dir": str(workdir / "pg")})


async def _count_in_database(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}
    finally:
        await conn.close()


async def _soak(path: Path, settings: Settings, hours: int,
                server: FixtureProcess) -> dict[str, Any]:
    from engine.app.engine import Engine, Options

    remote = {t.name: settings.llm.providers[t.provider].base_url for t in settings.traders
              if t.provider is not None
              and not settings.llm.providers[t.provider].base_url.startswith(server.url)}
    if remote:  # nothing leaves the machine: every LLM trader asks the fixture server
        raise RuntimeError(f"LLM traders not pointed at the fixture server: {remote}")
    async with _scratch_database() as dsn:
        secrets = Secrets(anthropic_api_key="sk-bench-fixture", openai_api_key="sk-bench-fixture",
                          deepseek_api_key="sk-bench-fixture", database_url=dsn,
                          control_token=None)
        server.served()  # from zero
        engine = Engine(settings, secrets, Options(replay=str(path), speed=None, live_llm=True))
        probe = Probe(engine, server, hours)
        probe.watch_loop_lag(engine.loop_monitor)
        start = engine.clock.time()
        rss_start = rss_mb()
        tasks = [asyncio.create_task(probe.count_rows()),
                 asyncio.create_task(probe.sample_hours(engine.clock, start)),
                 asyncio.create_task(probe.sample_end_of_replay())]
        t0 = timer()
        try:
            code = await engine.run()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        wall = timer() - t0
        probe.drain()
        probe.count_requests()
        in_db = await _count_in_database(dsn)
    replay_wall = (probe.replay_done_wall or timer()) - (probe.replay_start_wall or t0)
    sched = probe.replay_sched
    on_cpu, queued = ((sched[1][0] - sched[0][0], sched[1][1] - sched[0][1]) if len(sched) == 2
                      else (float("nan"), float("nan")))
    return {"code": code, "wall": wall, "replay_wall": replay_wall, "replay_cpu": on_cpu,
            "replay_queued": queued,
            "probe": probe, "in_db": in_db, "rss_start": rss_start, "rss_stopped": rss_mb(),
            "frames": engine.feed.frames, "sim_s": engine.clock.time() - start,
            "writer": engine.writer.status(), "traders": sorted(engine.strategies)}


def _idle_loop_lags(interval: float, conn: Any) -> None:
    """Child process: sample an idle event loop's lag like engine.loop_monitor until told to
    stop, then send the samples. What it sees is the machine's own scheduling delay."""
    import uvloop

    from engine.loop_monitor import LoopMonitor

    async def main() -> list[float]:
        lags: list[float] = []
        monitor = LoopMonitor(interval=interval, warn_after=1e9)
        monitor.observe = lags.append  # type: ignore[method-assign,assignment]
        task = asyncio.create_task(monitor.run())
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # the stop message
        task.cancel()
        return lags

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        conn.send(runner.run(main()))


class IdleLoopFloor:
    """An idle event loop in a sibling process, sampled like the engine's loop during a run."""

    def __init__(self, interval: float) -> None:
        import multiprocessing

        self._conn, child = multiprocessing.Pipe()
        self._proc = multiprocessing.get_context("fork").Process(
            target=_idle_loop_lags, args=(interval, child), daemon=True)
        self._proc.start()

    def stop(self) -> list[float]:
        self._conn.send("stop")
        lags = self._conn.recv() if self._conn.poll(30) else []
        self._proc.join(10)
        return lags


async def feed_only(path: Path, settings: Settings) -> tuple[float, int, float]:
    """Replay `path` through the feed alone (book, candles, bus); return (frames/s, frames,
    frames per second of the loop thread's CPU time)."""
    from engine.bus import Bus
    from engine.clock import SimClock
    from engine.market.book import PriceBook
    from engine.market.candles import CandleStore
    from engine.market.feed import Feed
    from engine.market.recording import first_frame_time
    from engine.market.replay import Replay

    clock = SimClock(start=first_frame_time(path) or 0.0)
    feed = Feed(settings.feed, Bus(), clock, PriceBook(), CandleStore(settings.feed.max_candles))
    replay = Replay(path, feed, clock)
    t0, cpu0 = timer(), schedstat()[0]
    await replay.run()
    cpu = schedstat()[0] - cpu0
    return replay.frames / (timer() - t0), replay.frames, replay.frames / cpu


def run(quick: bool = False, tiny: bool = False) -> list[Result]:
    """Replay a generated day (2 h with --quick, 1 h once with `tiny`) through the whole engine
    and through the feed alone, 3 times each; check cycles, rows, memory, loop lag and the ratio
    of the two."""
    import uvloop

    from engine.logging import configure

    configure(level="warning", fmt="json", stream=sys.stderr)
    hours = 1 if tiny else 2 if quick else 24
    outs = []
    with tempfile.TemporaryDirectory(prefix="arena-bench-soak-") as workdir, \
            FixtureProcess() as server:
        settings = soak_settings(Path(workdir))
        t0 = timer()
        path, cached = market_file(tuple(settings.feed.symbols), hours)
        gen_s = timer() - t0
        for i in range(1 if tiny else RUNS):
            run_settings = soak_settings(Path(workdir) / f"run{i}", server)
            idle = IdleLoopFloor(settings.engine.loop_lag_interval_seconds)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                try:
                    out = runner.run(_soak(path, run_settings, hours, server))
                finally:
                    out_idle = idle.stop()
                out["idle_lags"] = out_idle
                out["feed_fps"], out["feed_frames"], out["feed_cpu_fps"] = runner.run(
                    feed_only(path, settings))
            outs.append(out)
    return _results(outs, settings, hours, path, cached, gen_s, quick)


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.name:32s} {r.value:>12} {r.unit:6s} target {r.target or '-':24s} "
              f"{'' if r.met is None else ('met' if r.met else 'MISSED')}  {r.detail}")
