"""Backtest benchmark: `run.py backtest` against a feed-only replay of the same stream.

* `backtest.vs_feed_replay`: simulated minutes per wall minute of the whole backtest over those of
  the same stream replayed through `Feed.handle_frame` alone (no cycles, broker or writer), the
  feed-only replay run right after each timed backtest in the same process; the median of the
  per-run ratios. Target: >= 0.08 (the 50,000 simulated minutes a minute this target replaced
  sat at 0.07 of the feed-only replay on the machine it was set on).
* `backtest.sim_minutes_per_wall_minute`: the whole command (history from the disk cache, the
  engine replaying the window with the baselines `buy_and_hold` and `ema_cross`, the writer into
  a scratch Postgres database, the report) over the six default symbols, a week (`--quick`: a
  day), against a history served on 127.0.0.1 by `engine.market.fakebinance`. The history is
  fetched and the stream written once before the timed runs, as a second backtest of a window
  finds them cached. The median of 3 timed runs (`--quick`: 1), each a fresh arena in one
  scratch database. Absolute, for information (it moves with the host's speed and load).
* `backtest.sim_minutes_per_cpu_minute`: the median run over the main thread's CPU time (from
  `/proc/self/task/<tid>/schedstat`), for information: on a shared machine the wall figure also
  holds the time the thread waited for a core; the detail splits the wall time into on a core,
  waiting for one, and idle.
* `backtest.feed_only_sim_minutes_per_wall_minute`: the floor of the ratio above, for
  information.

Run: `python -m bench.backtest [--quick]`.
"""

from __future__ import annotations

import asyncio
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import Result, at_least, schedstat, timer
from bench.writer import _scratch_database

RATIO_TARGET = 0.08  # the whole backtest over the feed-only replay of its stream
START = "2026-10-01T00:00"
NOW = 1_793_491_200.0  # 2026-11-01: the window lies in the past


def _serve(ready: queue.Queue[tuple[str, str]], stop: threading.Event) -> None:
    from engine.market.fakebinance import FakeBinance

    async def main() -> None:
        fake = FakeBinance()
        await fake.start()
        async with _scratch_database() as dsn:
            ready.put((fake.rest_url, dsn))
            await asyncio.to_thread(stop.wait)
        await fake.stop()

    asyncio.run(main())


def _config(tmp: Path, url: str) -> Path:
    path = tmp / "settings.toml"
    path.write_text(f"""
[engine]
log_format = "json"
log_level = "error"

[feed]
futures_rest_url = "{url}"

[backtest]
cache_dir = "{tmp / 'history'}"

[control]
enabled = false

[report]
dir = "{tmp / 'reports'}"

[[traders]]
name = "buy_and_hold"
strategy = "buy_and_hold"

[[traders]]
name = "ema_cross"
strategy = "ema_cross"
""")
    return path


def _feed_only(stream: Path) -> tuple[float, int]:
    """Return the simulated seconds per wall second of the stream through the feed alone (on
    uvloop, as the backtest runs) and the frames replayed."""
    import uvloop

    from engine.bus import Bus
    from engine.clock import SimClock
    from engine.market.book import PriceBook
    from engine.market.candles import CandleStore
    from engine.market.feed import Feed
    from engine.market.recording import first_frame_time
    from engine.market.replay import Replay
    from engine.settings import load_settings

    settings = load_settings(stream.parent.parent.parent / "settings.toml").feed
    first = first_frame_time(stream) or 0.0
    clock = SimClock(start=first)
    feed = Feed(settings, Bus(), clock, PriceBook(), CandleStore(settings.max_candles))
    replay = Replay(stream, feed, clock)
    t0 = timer()
    uvloop.run(replay.run())
    return (clock.time() - first) / (timer() - t0), replay.frames


async def _cycles(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM cycles"))
    finally:
        await conn.close()


def run(quick: bool = False, tiny: bool = False) -> list[Result]:
    """Time a backtest of the six default symbols with the baselines against a feed-only replay
    of its stream (`tiny`: a smoke pass of six hours, figures meaningless)."""
    import structlog

    from engine.app import backtest
    from engine.settings import load_settings

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    days = 0.25 if tiny else 1 if quick else 7
    end = "2026-10-01T06:00" if tiny else f"2026-10-0{1 + int(days)}T00:00"
    ready: queue.Queue[tuple[str, str]] = queue.Queue()
    stop = threading.Event()
    server = threading.Thread(target=_serve, args=(ready, stop), daemon=True)
    server.start()
    url, dsn = ready.get(timeout=120)
    try:
        with tempfile.TemporaryDirectory(prefix="arena-bench-backtest-") as tmp:
            config = _config(Path(tmp), url)
            os.environ["DATABASE_URL"] = dsn
            args = ["--config", str(config), "--from", START, "--to", end]
            settings = backtest.plan(load_settings(str(config)),
                                     backtest.parser().parse_args(args), NOW)
            stream, _ = asyncio.run(backtest.prepare(settings, settings_start(args),
                                                     settings_start(args, "--to"), NOW))
            timed = []  # (wall, process CPU, (on a core, waiting for one), exit code) per run
            feed_rates = []  # the feed-only replay right after each timed run
            for _ in range(1 if quick or tiny else 3):
                cpu0, sched0 = time.process_time(), schedstat()
                t0 = timer()
                code = backtest.main(args, now=NOW)
                wall = timer() - t0
                timed.append((wall, time.process_time() - cpu0,
                              tuple(b - a for a, b in zip(sched0, schedstat(), strict=True)),
                              code))
                feed_rate, frames = _feed_only(stream)  # sim s per wall s = sim min per wall min
                feed_rates.append(feed_rate)
            cycles = asyncio.run(_cycles(dsn))
    finally:
        stop.set()
        server.join(timeout=60)
    minutes = round(days * 1440)
    wall, cpu, (on_cpu, queued), _ = sorted(timed)[len(timed) // 2]  # the median run
    code = max(t[3] for t in timed)
    rate = minutes / (wall / 60)
    runs = ", ".join(f"{minutes / (t[0] / 60):,.0f}" for t in timed)
    ratios = [minutes / (t[0] / 60) / f for t, f in zip(timed, feed_rates, strict=True)]
    ratio = statistics.median(ratios)
    feed_rate = statistics.median(feed_rates)
    return [
        Result("backtest.vs_feed_replay", round(ratio, 3), "x", f">= {RATIO_TARGET}",
               code == 0 and at_least(ratio, RATIO_TARGET),
               f"{days:g} day(s) of 6 symbols, buy_and_hold + ema_cross: the whole command "
               f"(exit {code}) at {rate:,.0f} simulated minutes a wall minute over the same "
               f"stream through the feed alone at {feed_rate:,.0f} ({frames:,} frames); per-run "
               f"ratios {[round(r, 3) for r in ratios]}; {cycles} cycles recorded over "
               f"{len(timed)} run(s)", workload=min(cycles, frames)),
        Result("backtest.sim_minutes_per_wall_minute", round(rate), "sim min/min", "", None,
               f"absolute, for information: {minutes:,} simulated minutes in {wall:.1f} s wall "
               f"(whole command from the disk cache, writer and report included; exit {code}); "
               f"median of {len(timed)} run(s) [{runs}]; {os.cpu_count()} cores",
               workload=cycles),
        Result("backtest.sim_minutes_per_cpu_minute", round(minutes / (on_cpu / 60)),
               "sim min/min", "", None,
               f"the median run over the main thread's CPU time ({on_cpu:.1f} s on a core, "
               f"{queued:.1f} s runnable but waiting for one, {wall - on_cpu - queued:.1f} s "
               f"idle: waiting on Postgres, threads, the report; process CPU {cpu:.1f} s): "
               "what the run costs without the machine's other load"),
        Result("backtest.feed_only_sim_minutes_per_wall_minute", round(feed_rate),
               "sim min/min", "", None,
               "the same stream through Feed.handle_frame alone (no cycles, broker, writer), "
               "on uvloop; the median of the runs after each backtest", workload=frames),
    ]


def settings_start(args: list[str], flag: str = "--from") -> float:
    """Return the epoch seconds of a --from/--to value in `args`."""
    from engine.app.backtest import _when

    return _when(args[args.index(flag) + 1])


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.name:48s} {r.value:>12,} {r.unit:12s} target {r.target or '-':10s} "
              f"{'' if r.met is None else ('met' if r.met else 'MISSED')}  {r.detail}")
