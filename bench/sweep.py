"""Sweep benchmark: four CPU-bound backtests as one sweep against one alone, in the same run.

* `sweep.speedup_cpu_bound`: 4 x the wall time of a one-run sweep over the wall time of a
  four-run sweep (baselines only, 4 windows, `concurrency` = the cores). Target: at least
  0.8 x cores / the cores one run uses, measured in the same run as the CPU time of the one-run
  sweep's worker process over its wall time (Postgres's share is not counted in it).

The fake Binance and a scratch Postgres are the backtest benchmark's. Not measured yet: the
LLM-bound rows (`backtest.llm_bound_vs_bound`, `sweep.speedup_8_llm_bound`).
Run: `python -m bench.sweep [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import queue
import resource
import sys
import tempfile
import threading
from pathlib import Path

from bench.backtest import _config, _serve
from bench.common import Result, at_least, timer

SWEEP = """
[sweep]
name = "{name}"
config = "settings.toml"
symbols = ["BTCUSDT", "ETHUSDT"]
period = {{ from = "2026-10-01T00:00", to = "{end}" }}
windows = {windows}
concurrency = {concurrency}

[[variant]]
name = "baselines"
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time_sweep(tmp: Path, name: str, end: str, windows: int, concurrency: int) -> float:
    """Run one sweep (history already cached); return its wall seconds."""
    from engine.app.sweep import run_sweep
    from engine.app.sweep_plan import load_sweep

    path = tmp / f"{name}.toml"
    path.write_text(SWEEP.format(name=name, end=end, windows=windows, concurrency=concurrency))
    args = argparse.Namespace(yes=True, concurrency=None, ray=None, prune=False)
    t0 = timer()
    code = asyncio.run(run_sweep(load_sweep(path), args, io.StringIO()))
    if code != 0:
        raise RuntimeError(f"sweep {name} exited {code}")
    return timer() - t0


def run(quick: bool = False) -> list[Result]:
    """Time four backtests as one sweep and one alone."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    hours = 6 if quick else 24  # each window
    cores = os.cpu_count() or 1
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()
    server = threading.Thread(target=_serve, args=(ready, stop), daemon=True)
    server.start()
    url, dsn = ready.get(timeout=120)
    try:
        with tempfile.TemporaryDirectory(prefix="arena-bench-sweep-") as tmp_name:
            tmp = Path(tmp_name)
            _config(tmp, url)
            os.environ["DATABASE_URL"] = dsn
            four_end = f"2026-10-0{1 + 4 * hours // 24}T{(4 * hours) % 24:02d}:00"
            one_end = f"2026-10-0{1 + hours // 24}T{hours % 24:02d}:00"
            _time_sweep(tmp, "warm", four_end, 4, cores)  # history fetched, streams written
            cpu0 = _children_cpu()
            one = _time_sweep(tmp, "one", one_end, 1, 1)
            one_cores = (_children_cpu() - cpu0) / one
            four = _time_sweep(tmp, "four", four_end, 4, cores)
    finally:
        stop.set()
        server.join(timeout=60)
    speedup = 4 * one / four
    target = 0.8 * cores / max(1.0, one_cores)
    return [Result(
        "sweep.speedup_cpu_bound", round(speedup, 2), "x", f">= {target:.2f}",
        at_least(speedup, target),
        f"4 backtests of {hours} h (2 symbols, buy_and_hold + ema_cross) as one sweep "
        f"({four:.1f} s wall) against one alone ({one:.1f} s); one run uses {one_cores:.2f} "
        f"cores (its worker's CPU time over wall time; Postgres not counted); {cores} cores")]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.name:48s} {r.value:>12,} {r.unit:12s} target {r.target or '-':10s} "
              f"{'' if r.met is None else ('met' if r.met else 'MISSED')}  {r.detail}")
