"""Sweep benchmarks, each ratio measured in the same run.

* `sweep.speedup_cpu_bound`: 4 x the wall time of a one-run sweep over the wall time of a
  four-run sweep (baselines only, 4 windows, `concurrency` = the cores). Target: at least
  0.8 x cores / the cores one run uses (at least 1: `concurrency` = the cores caps the speedup
  at the cores), measured in the same run: the CPU time of the one-run sweep (its worker
  process, the sweep process and the Postgres backends serving the scratch database, sampled
  from /proc every 0.2 s) over its wall time.
* `backtest.llm_bound_vs_bound`: one backtest of an LLM trader whose model (a local stand-in,
  bench/llm_standin.py, OpenAI chat completions on 127.0.0.1) answers every request after
  L = 2 s: its simulated minutes per wall minute over the bound 5 min / L a cycle (150 at
  L = 2 s). The whole command is timed (`run.py backtest --live-llm`, history from the disk
  cache as a second backtest of a window finds it, the writer, the report), with the answer
  cache off (`llm_cache.replay = false`), so every cycle waits L. Target: >= 0.95 (the engine
  adds at most 5 % a cycle to the model's latency).
* `sweep.speedup_8_llm_bound`: 8 x the wall time of a one-run sweep of that backtest over the
  wall time of one sweep of 8 of them (8 replicates, `concurrency = 8`); both sweeps' whole
  commands are timed (their worker processes' start-up included). Target: >= 6 on the 2-core
  development machine: they wait on the model.

The fake Binance and a scratch Postgres are the backtest benchmark's. Windows: 24 h (`--quick`:
6 h) for the CPU-bound row; 4 h (`--quick`: 2 h), 48 cycles (24), for the LLM-bound ones.
`--tiny` (tests/bench/test_workloads.py): 1-hour windows and L = 0.2 s, figures meaningless.
Run: `python -m bench.sweep [--quick|--tiny]`.
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
import time
from pathlib import Path

from bench.backtest import NOW, START, _config, _cycles, _serve, settings_start
from bench.common import Result, at_least, timer
from bench.llm_standin import SlowModel

LATENCY_S = 2.0  # the stand-in model's answer time
CYCLE_MINUTES = 5.0  # the engine's cycle interval (engine.cycle)
LLM_BOUND_TARGET = 0.95
LLM_SPEEDUP_TARGET = 6.0
LLM_RUNS = 8

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

LLM_SETTINGS = """
[llm.providers.openai]
base_url = "{llm}/v1"
max_retries = 0

[llm_cache]
replay = false  # every cycle asks the model: no answer comes from the cache

[[traders]]
name = "gpt"
strategy = "llm"
provider = "openai"
model = "gpt-4o"
max_tokens = 200
timeout_seconds = 60
"""

LLM_SWEEP = """
[sweep]
name = "{name}"
config = "settings.toml"
symbols = ["BTCUSDT", "ETHUSDT"]
windows = [{{ from = "{start}", to = "{end}" }}]
replicates = {replicates}
concurrency = {replicates}
live_llm = true

[[variant]]
name = "gpt"
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class PostgresCPU:
    """The CPU seconds of the Postgres backends serving one database, sampled every 0.2 s (from
    pg_stat_activity's pids and /proc/<pid>/stat) while the block runs. A backend's last 0.2 s
    before its connection closed may be missed: a slight undercount."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.seconds: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._sample()), daemon=True)

    def __enter__(self) -> PostgresCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    async def _sample(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            mine = await conn.fetchval("SELECT pg_backend_pid()")
            while True:
                for pid in await conn.fetch(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> $1", mine):
                    cpu = _process_cpu(pid["pid"])
                    if cpu is not None:
                        self.seconds[pid["pid"]] = max(cpu, self.seconds.get(pid["pid"], 0.0))
                if self._stop.wait(0.2):
                    return
        finally:
            await conn.close()


def _process_cpu(pid: int) -> float | None:
    """Return a process's user + system CPU seconds (None when it is gone or unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _time_sweep(tmp: Path, name: str, end: str, windows: int, concurrency: int) -> float:
    """Run one sweep (history already cached); return its wall seconds."""
    return _timed_sweep(tmp, name, SWEEP.format(name=name, end=end, windows=windows,
                                                concurrency=concurrency))


def _timed_sweep(tmp: Path, name: str, text: str) -> float:
    """Run the sweep file `text` (in `tmp`, beside its settings.toml); return its wall seconds."""
    from engine.app.sweep import run_sweep
    from engine.app.sweep_plan import load_sweep

    path = tmp / f"{name}.toml"
    path.write_text(text)
    args = argparse.Namespace(yes=True, concurrency=None, ray=None, prune=False)
    t0 = timer()
    code = asyncio.run(run_sweep(load_sweep(path), args, io.StringIO()))
    if code != 0:
        raise RuntimeError(f"sweep {name} exited {code}")
    return timer() - t0


def run(quick: bool = False, tiny: bool = False) -> list[Result]:
    """Time four CPU-bound backtests as one sweep and one alone, then one LLM-bound backtest
    against its bound and eight as one sweep against one alone."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    hours = 1 if tiny else 6 if quick else 24  # each window
    llm_hours = 1 if tiny else 2 if quick else 4
    latency = 0.2 if tiny else LATENCY_S
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
            cpu0, own0 = _children_cpu(), time.process_time()
            with PostgresCPU(dsn) as pg:
                one = _time_sweep(tmp, "one", one_end, 1, 1)
            worker_cpu, own_cpu = _children_cpu() - cpu0, time.process_time() - own0
            one_cores = (worker_cpu + own_cpu + pg.total) / one
            four = _time_sweep(tmp, "four", four_end, 4, cores)
            cycles = asyncio.run(_cycles(dsn))
            llm = _llm_rows(tmp / "llm", url, llm_hours, latency)
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
        f"cores (CPU over the one-run sweep's wall time: worker {worker_cpu:.1f} s, sweep "
        f"process {own_cpu:.1f} s, Postgres backends {pg.total:.1f} s); {cores} cores",
        workload=cycles), *llm]


async def _last_run_cycles(dsn: str) -> dict[str, int]:
    """Return the latest run's cycles by status (and skip reason)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT status, skip_reason, count(*) AS n FROM cycles WHERE run_id = "
            "(SELECT run_id FROM runs ORDER BY id DESC LIMIT 1) GROUP BY 1, 2")
    finally:
        await conn.close()
    return {r["status"] + (f" ({r['skip_reason']})" if r["skip_reason"] else ""): int(r["n"])
            for r in rows}


def _llm_rows(tmp: Path, url: str, hours: int, latency: float) -> list[Result]:
    """One LLM-bound backtest against its bound; eight as one sweep against one alone."""
    from engine.app import backtest
    from engine.settings import load_settings

    tmp.mkdir()
    config = _config(tmp, url)
    end = f"2026-10-01T{hours:02d}:00"
    os.environ["OPENAI_API_KEY"] = "sk-bench-dummy"  # the stand-in takes any key
    with SlowModel(latency) as model:
        config.write_text(config.read_text().split("[[traders]]")[0]
                          + LLM_SETTINGS.format(llm=model.url))
        args = ["--config", str(config), "--from", START, "--to", end,
                "--symbols", "BTCUSDT,ETHUSDT", "--live-llm", "--yes"]
        settings = backtest.plan(load_settings(str(config)), backtest.parser().parse_args(args),
                                 NOW)
        asyncio.run(backtest.prepare(settings, settings_start(args),  # history cached
                                     settings_start(args, "--to"), NOW))
        asked0 = model.answered
        cpu0 = time.process_time()
        t0 = timer()
        code = backtest.main(args, now=NOW)
        wall = timer() - t0
        cpu = time.process_time() - cpu0
        asked = model.answered - asked0
        cycles = asyncio.run(_last_run_cycles(os.environ["DATABASE_URL"]))
        one = _timed_sweep(tmp, "llm-one", LLM_SWEEP.format(
            name="llm-one", start=START, end=end, replicates=1))
        asked1 = model.answered
        eight = _timed_sweep(tmp, "llm-eight", LLM_SWEEP.format(
            name="llm-eight", start=START, end=end, replicates=LLM_RUNS))
        asked8 = model.answered - asked1
    n_cycles = sum(cycles.values())
    # The simulated minutes the cycles that waited on the model cover (5 min each): the
    # window's first 5 minutes hold no cycle, so the window's length would flatter the figure.
    minutes = CYCLE_MINUTES * min(asked, n_cycles)
    bound = CYCLE_MINUTES / (latency / 60)  # simulated minutes per wall minute
    rate = minutes / (wall / 60)
    ratio = rate / bound
    waited = asked * latency
    per_cycle = (wall - waited) / n_cycles if n_cycles else float("nan")
    statuses = ", ".join(f"{n} {why}" for why, n in sorted(cycles.items()))
    speedup = LLM_RUNS * one / eight
    return [
        Result("backtest.llm_bound_vs_bound", round(ratio, 3), "x", f">= {LLM_BOUND_TARGET}",
               code == 0 and at_least(ratio, LLM_BOUND_TARGET),
               f"one backtest of {hours} h (2 symbols, one LLM trader, the model answering "
               f"after {latency:g} s, answer cache off): {rate:.1f} simulated minutes (5 a "
               f"cycle that asked the model) a wall "
               f"minute against the bound {bound:.0f} (5 min / L a cycle); {wall:.1f} s wall "
               f"for {n_cycles} cycles ({statuses}) and {asked} answers ({waited:.0f} s of "
               f"model latency): the engine added {per_cycle * 1000:.0f} ms a cycle, whole "
               f"command included (start, history "
               f"from the disk cache, writer, report; process CPU {cpu:.1f} s); exit {code}",
               workload=asked),
        Result("sweep.speedup_8_llm_bound", round(speedup, 2), "x", f">= {LLM_SPEEDUP_TARGET:g}",
               at_least(speedup, LLM_SPEEDUP_TARGET),
               f"{LLM_RUNS} such backtests as one sweep (8 replicates, concurrency 8: "
               f"{eight:.1f} s wall, {asked8} LLM requests answered) against a one-run sweep "
               f"({one:.1f} s); whole sweep commands, worker start-up included; "
               f"{os.cpu_count()} cores", workload=asked8),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv, tiny="--tiny" in sys.argv):
        print(f"{r.name:48s} {r.value:>12,} {r.unit:12s} target {r.target or '-':10s} "
              f"{'' if r.met is None else ('met' if r.met else 'MISSED')}  {r.detail}")
