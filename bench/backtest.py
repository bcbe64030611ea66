"""Backtest benchmark: simulated minutes per wall-clock minute of `run.py backtest`.

* `backtest.sim_minutes_per_wall_minute`: the whole command (history from the disk cache, the
  engine replaying the window with the baselines `buy_and_hold` and `ema_cross`, the writer into
  a scratch Postgres database, the report) over the six default symbols, a week (`--quick`: a
  day), against a history served on 127.0.0.1 by `engine.market.fakebinance`. The history is
  fetched and the stream written once before the timed runs, as a second backtest of a window
  finds them cached. The median of 3 timed runs (`--quick`: 1), each a fresh arena in one
  scratch database. Target: >= 50,000 (a week in about 12 s).
* `backtest.sim_minutes_per_cpu_minute`: the median run over the main thread's CPU time (from
  `/proc/self/task/<tid>/schedstat`), for information: on a shared machine the wall figure also
  holds the time the thread waited for a core; the detail splits the wall time into on a core,
  waiting for one, and idle.
* `backtest.feed_only_sim_minutes_per_wall_minute`: the same stream through the replay and
  `Feed.handle_frame` alone (no cycles, broker or writer; every path frame handed over), for
  information: the floor the engine adds its work to.

Run: `python -m bench.backtest [--quick]`.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import Result, at_least, timer
from bench.writer import _scratch_database

TARGET = 50_000
START = "2026-10-01T00:00"
NOW = 1_793_491_200.0  # 2026-11-01: the window lies in the past


def _serve(ready: queue.Queue, stop: threading.Event) -> None:
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


def _feed_only(stream: Path) -> float:
    """Return the simulated seconds per wall second of the stream through the feed alone."""
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
    t0 = timer()
    asyncio.run(Replay(stream, feed, clock).run())
    return (clock.time() - first) / (timer() - t0)


def run(quick: bool = False) -> list[Result]:
    """Time a backtest of the six default symbols with the baselines."""
    import structlog

    from engine.app import backtest

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    days = 1 if quick else 7
    end = f"2026-10-0{1 + days}T00:00"
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()
    server = threading.Thread(target=_serve, args=(ready, stop), daemon=True)
    server.start()
    url, dsn = ready.get(timeout=120)
    try:
        with tempfile.TemporaryDirectory(prefix="arena-bench-backtest-") as tmp:
            config = _config(Path(tmp), url)
            os.environ["DATABASE_URL"] = dsn
            args = ["--config", str(config), "--from", START, "--to", end]
            settings = backtest.plan(backtest.load_settings(str(config)),
                                     backtest.parser().parse_args(args), NOW)
            stream, _ = asyncio.run(backtest.prepare(settings, settings_start(args),
                                                     settings_start(args, "--to"), NOW))
            timed = []  # (wall, process CPU, (on a core, waiting for one), exit code) per run
            for _ in range(1 if quick else 3):
                cpu0, sched0 = time.process_time(), _schedstat()
                t0 = timer()
                code = backtest.main(args, now=NOW)
                wall = timer() - t0
                timed.append((wall, time.process_time() - cpu0,
                              tuple(b - a for a, b in zip(sched0, _schedstat(), strict=True)),
                              code))
            feed_rate = _feed_only(stream)  # sim s per wall s = sim min per wall min
    finally:
        stop.set()
        server.join(timeout=60)
    minutes = days * 1440
    wall, cpu, (on_cpu, queued), _ = sorted(timed)[len(timed) // 2]  # the median run
    code = max(t[3] for t in timed)
    rate = minutes / (wall / 60)
    runs = ", ".join(f"{minutes / (t[0] / 60):,.0f}" for t in timed)
    return [
        Result("backtest.sim_minutes_per_wall_minute", round(rate), "sim min/min",
               f">= {TARGET:,}", code == 0 and at_least(rate, TARGET),
               f"{days} day(s) of 6 symbols, buy_and_hold + ema_cross, {minutes:,} simulated "
               f"minutes in {wall:.1f} s wall (whole command from the disk cache, writer and "
               f"report included; exit {code}); median of {len(timed)} run(s) [{runs}]; "
               f"{os.cpu_count()} cores"),
        Result("backtest.sim_minutes_per_cpu_minute", round(minutes / (on_cpu / 60)),
               "sim min/min", "", None,
               f"the median run over the main thread's CPU time ({on_cpu:.1f} s on a core, "
               f"{queued:.1f} s runnable but waiting for one, {wall - on_cpu - queued:.1f} s "
               f"idle: waiting on Postgres, threads, the report; process CPU {cpu:.1f} s): "
               "what the run costs without the machine's other load"),
        Result("backtest.feed_only_sim_minutes_per_wall_minute", round(feed_rate),
               "sim min/min", "", None,
               "the same stream through Feed.handle_frame alone (no cycles, broker, writer)"),
    ]


def _schedstat() -> tuple[float, float]:
    """Return this thread's (seconds on a CPU, seconds runnable but waiting for one)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as fh:
            on_cpu, waiting = fh.read().split()[:2]
    except OSError:  # not Linux: CPU time only
        return time.thread_time(), 0.0
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def settings_start(args: list[str], flag: str = "--from") -> float:
    """Return the epoch seconds of a --from/--to value in `args`."""
    from engine.app.backtest import _when

    return _when(args[args.index(flag) + 1])


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.name:48s} {r.value:>12,} {r.unit:12s} target {r.target or '-':10s} "
              f"{'' if r.met is None else ('met' if r.met else 'MISSED')}  {r.detail}")
