"""`python run.py sweep FILE.toml`: many backtests at once, one process and one arena each.

The sweep file (engine.app.sweep_plan) expands into runs: windows x variants x replicates. Every
run is `run.py backtest`'s, in a process of its own (`engine.app.sweep_worker`: metrics, logging
and the allocator are process-wide), in a fresh arena, all in one Postgres: `DATABASE_URL` when
set, else the embedded server of the sweep's settings, whose URL the workers are given. The
workers share the LLM answer cache (`llm_cache`) and one rate budget per provider
(`rate_buckets`, engine.traders.rate_budget). Runs go `concurrency` at a time on this machine
(0: one per core), or as Ray tasks with `--ray auto|local|ADDRESS` (engine.app.sweep_ray). Each
finished run is recorded in `sweep_runs` by its key: a sweep run again runs only the keys not
done, and says so (`sweep: 0 of 4 runs to run`). At the end the sweep report is written
(engine.report.sweep).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from engine.app.sweep_plan import RunSpec, Sweep, SweepError, cores, iso, load_sweep

Launch = Callable[[RunSpec, Path, str], Awaitable[int]]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py sweep",
                                description="Run many backtests at once (see docs/sweeps.md).")
    p.add_argument("file", nargs="?", metavar="FILE.toml", help="the sweep file")
    p.add_argument("--demo", action="store_true",
                   help="offline: 2 windows x 2 variants of rule-based traders on a local fake "
                   "Binance (files under ./data/sweep-demo)")
    p.add_argument("--yes", action="store_true", help="do not ask before spending")
    p.add_argument("--concurrency", type=int, metavar="N",
                   help="runs at once on this machine (default: the file's, else the cores)")
    p.add_argument("--ray", metavar="auto|local|ADDRESS",
                   help="run each backtest as a Ray task: join the running cluster (auto), start "
                   "Ray on this machine (local) or connect to ADDRESS (needs arena[ray])")
    p.add_argument("--prune", action="store_true",
                   help="first remove the rows and files of this sweep's runs the file no "
                   "longer names (and of failed or interrupted ones)")
    return p


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None) -> int:
    """Run a sweep from the command line; return the exit code."""
    from engine import logging as arena_logging

    try:
        args = parser().parse_args(list(argv or ()))
    except SystemExit as exc:
        return int(exc.code or 0)
    arena_logging.configure("warning", "console", stream=sys.stderr)  # the runs log to run.log
    if args.demo:
        from engine.app.sweep_demo import DEMO_DIR

        return asyncio.run(run_demo(args, stdin or sys.stdin, DEMO_DIR))
    if not args.file:
        print("sweep error: give a sweep file (or --demo)", file=sys.stderr)
        return 2
    try:
        sweep = load_sweep(args.file)
    except SweepError as exc:
        print(f"sweep error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run_sweep(sweep, args, stdin or sys.stdin))


async def run_sweep(sweep: Sweep, args: argparse.Namespace, stdin: TextIO,
                    env: dict[str, str] | None = None) -> int:
    """Open the database, run the runs not done yet, write the report; return the exit code."""
    import asyncpg

    from engine.app import sweep_store
    from engine.settings import Secrets, Settings
    from engine.store.database import Database, migrate

    settings = Settings.model_validate(sweep.base)
    secrets = Secrets.from_env(env) if env is not None else Secrets.from_env()
    db = await Database.open(settings.database, secrets)
    try:
        await migrate(db.dsn)
        runs = sweep.runs()
        conn = await asyncpg.connect(db.dsn)
        try:
            if args.prune:
                gone, rows = await sweep_store.prune(conn, sweep=sweep.name,
                                                     keep={r.key for r in runs})
                print(f"sweep: pruned {gone} run(s), {rows} row(s)", flush=True)
            done = await sweep_store.finished_keys(conn, sweep.name)
        finally:
            await conn.close()
        todo = [r for r in runs if r.key not in done]
        print(f"sweep: {len(todo)} of {len(runs)} runs to run", flush=True)
        if todo and not _confirm_costs(sweep, todo, secrets, args.yes, stdin):
            print("sweep: cancelled, nothing was spent", flush=True)
            return 1
        failed = 0
        if todo:
            failed = await _run_all(sweep, todo, db.dsn, args, env)
        await _report(sweep, db.dsn)
        return 1 if failed else 0
    finally:
        await db.close()


async def run_demo(args: argparse.Namespace, stdin: TextIO, directory: Path,
                   env: dict[str, str] | None = None) -> int:
    """Serve the fake Binance, write the demo's files into `directory` and run its sweep."""
    from engine.app.sweep_demo import write_demo
    from engine.market.fakebinance import FakeBinance

    fake = FakeBinance()
    await fake.start()
    try:
        sweep = load_sweep(write_demo(directory, fake.rest_url))
        print(f"sweep demo: fake Binance at {fake.rest_url}; files under {directory}", flush=True)
        return await run_sweep(sweep, args, stdin, env)
    finally:
        await fake.stop()


def sweep_dir(sweep: Sweep) -> Path:
    """Return the directory of the sweep's files: its report and a directory per run."""
    report_dir = sweep.base.get("report", {}).get("dir", "./data/reports")
    return Path(report_dir) / "sweeps" / sweep.name


def _confirm_costs(sweep: Sweep, todo: list[RunSpec], secrets: Any, assume_yes: bool,
                   stdin: TextIO) -> bool:
    from engine.app.costs import CostRow, confirm, estimate
    from engine.settings import Settings

    rows: list[CostRow] = []
    for run in todo:
        settings = Settings.model_validate(run.raw)
        rows.extend(estimate(settings, run.window.start, run.window.end, live=sweep.live_llm,
                             secrets=secrets))
    return confirm(rows, live=sweep.live_llm, assume_yes=assume_yes, stdin=stdin)


async def _prefetch(sweep: Sweep, todo: list[RunSpec]) -> None:
    """Fetch each window's history and write each recording once, before the runs share them."""
    import argparse as ap

    from engine.app.backtest import plan, prepare
    from engine.clock import LiveClock
    from engine.settings import Settings

    now = LiveClock().time()
    seen: set[tuple[float, float, str]] = set()
    for run in todo:
        settings = plan(Settings.model_validate(run.raw),
                        ap.Namespace(start=run.window.start, end=run.window.end, symbols=None,
                                     traders=None,
                                     allow_contamination=sweep.allow_contamination), now)
        marker = (run.window.start, run.window.end, settings.digest())
        if marker not in seen:
            seen.add(marker)
            await prepare(settings, run.window.start, run.window.end, now)


async def _run_all(sweep: Sweep, todo: list[RunSpec], dsn: str, args: argparse.Namespace,
                   env: dict[str, str] | None) -> int:
    """Run every run of `todo`; return how many failed."""
    import asyncpg

    from engine.app import sweep_store
    from engine.app.backtest import BadInput
    from engine.events import new_id

    try:
        await _prefetch(sweep, todo)
    except BadInput as exc:
        print(f"sweep error: {exc}", file=sys.stderr)
        return len(todo)
    base_env = {k: v for k, v in (env if env is not None else os.environ).items()}
    base_env["DATABASE_URL"] = dsn
    if args.ray:
        from engine.app.sweep_ray import ray_launcher

        launch: Launch = ray_launcher(args.ray, base_env)
        limit = len(todo)  # Ray schedules them by their fractional CPUs
    else:
        launch = _local_launcher(base_env)
        limit = args.concurrency or sweep.concurrency or cores()
    gate = asyncio.Semaphore(limit)
    progress = Progress(len(todo))
    conn = await asyncpg.connect(dsn)
    lock = asyncio.Lock()  # one bookkeeping connection for every run

    async def one(run: RunSpec) -> bool:
        async with gate:
            run_dir = (sweep_dir(sweep) / "runs" / run.key).resolve()
            run_dir.mkdir(parents=True, exist_ok=True)
            run_id = new_id()
            async with lock:
                await sweep_store.mark_running(conn, sweep.name, run, run_dir, run_id)
            spec = _write_spec(run, run_dir, sweep.live_llm, run_id, sweep.allow_contamination)
            started = time.perf_counter()
            code = await launch(run, spec, str(run_dir))
            result = _read_result(run_dir)
            code = int(result.get("code", code)) if code == 0 else code
            async with lock:
                await sweep_store.mark_finished(conn, sweep.name, run.key, code)
            progress.finished(run, code, time.perf_counter() - started, str(run_id))
            return code == 0

    try:
        results = await asyncio.gather(*(one(r) for r in todo))
    finally:
        await conn.close()
        if args.ray:
            from engine.app.sweep_ray import shutdown

            shutdown()
    return sum(1 for ok in results if not ok)


def _write_spec(run: RunSpec, run_dir: Path, live_llm: bool, run_id: uuid.UUID,
                allow_contamination: bool = False) -> Path:
    raw = dict(run.raw)
    raw["database"] = {**raw.get("database", {}), "spill_path": str(run_dir / "spill.jsonl")}
    raw["report"] = {**raw.get("report", {}), "dir": str(run_dir), "on_exit": True}
    raw["control"] = {**raw.get("control", {}), "enabled": False}
    path = run_dir / "spec.json"
    result = run_dir / "result.json"
    result.unlink(missing_ok=True)
    path.write_bytes(orjson.dumps({"settings": raw, "start": run.window.start,
                                   "end": run.window.end, "live_llm": live_llm,
                                   "result": str(result), "key": run.key,
                                   "run_id": str(run_id),
                                   "allow_contamination": allow_contamination}))
    return path


def _read_result(run_dir: Path) -> dict[str, Any]:
    try:
        result: dict[str, Any] = orjson.loads((run_dir / "result.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {"code": 1}
    return result


def worker_command(spec: Path) -> list[str]:
    """Return the command running one run of a sweep in a process of its own."""
    return [sys.executable, "-m", "engine.app.sweep_worker", str(spec)]


def _local_launcher(env: dict[str, str]) -> Launch:
    root = str(Path(__file__).resolve().parents[2])  # the worker imports this tree's engine

    async def launch(run: RunSpec, spec: Path, run_dir: str) -> int:
        log_file = await asyncio.to_thread(open, Path(run_dir) / "run.log", "wb")
        with log_file:
            proc = await asyncio.create_subprocess_exec(
                *worker_command(spec), cwd=root, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file, stderr=asyncio.subprocess.STDOUT)
            try:
                return await proc.wait()
            except asyncio.CancelledError:
                proc.terminate()
                await proc.wait()
                raise

    return launch


class Progress:
    """One display for the whole sweep: a line per finished run, with the count and the pace."""

    def __init__(self, total: int, out: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self._t0 = time.perf_counter()
        self._out = out or sys.stdout

    def finished(self, run: RunSpec, code: int, seconds: float, run_id: str | None) -> None:
        """Show one run's end and the sweep's progress."""
        self.done += 1
        self.failed += code != 0
        elapsed = time.perf_counter() - self._t0
        left = (self.total - self.done) * elapsed / self.done
        state = "done" if code == 0 else f"FAILED (exit {code}, see its run.log)"
        print(f"sweep: [{self.done}/{self.total}] {iso(run.window.start)} {run.variant}"
              f"{f' #{run.replicate + 1}' if run.replicate else ''}: {state} in {seconds:.1f} s"
              f" (run {(run_id or '-')[:13]}); {elapsed:.0f} s elapsed, ~{left:.0f} s left",
              file=self._out, flush=True)


async def _report(sweep: Sweep, dsn: str) -> None:
    """Write the sweep report and say where."""
    import asyncpg

    from engine.report.sweep import write_sweep_report

    conn = await asyncpg.connect(dsn)
    try:
        paths = await write_sweep_report(conn, sweep.name, sweep_dir(sweep))
    finally:
        await conn.close()
    for p in paths:
        print(f"sweep report: {p}", flush=True)
