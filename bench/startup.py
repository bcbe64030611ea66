"""Start-up: seconds from spawning `python run.py` to its `engine.ready` log line.

Each trial runs in a fresh temporary directory as the working directory, so the embedded Postgres
(pgserver, `./data/pg`) starts there: the first start is cold (initdb, migrations), the second
warm (an existing cluster, recovery of the first run's accounts). The live path is the real one:
the feed connects to the fake Binance on 127.0.0.1 (engine.market.fakebinance: combined streams of
engine.market.marketgen frames, paced in real time) and backfills from its REST klines;
the engine is ready once prices are in. The LLM traders get fake keys and endpoints on
127.0.0.1 (no cycle runs before the engine is stopped), so all five traders are built. Nothing
contacts the internet.

The floor, measured in the same run: a child process that imports exactly the modules the engine
had imported when it logged `engine.ready` (listed by a warm-up start under `python -X
importtime`, its enabled traders' SDKs included) while it starts the embedded Postgres with the
engine's own call (`engine.store.database._start_embedded`) in a thread beside the imports, in a
fresh directory (cold: initdb) and again on the same directory (warm). Overlapped so, it is the
least time the two can take together: the engine, which also overlaps them (it warms the SDKs
while Postgres starts), cannot beat it. The figures are the engine's time to ready minus the
floor's, per trial, median of the trials. Run: `python -m bench.startup [--quick]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from bench.common import Result, timer
from engine.market import marketgen
from engine.market.fakebinance import FakeBinance, synthetic_market
from engine.market.fakebinance.synthetic import Candle

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 120.0
COLD_TARGET_S = 1.0  # engine cold start <= floor + 1.0 s
WARM_TARGET_S = 0.5  # engine warm start <= floor + 0.5 s
# The floor child: start Postgres in a thread and, beside it, import the engine's modules in the
# order it finished them.
FLOOR_CODE = """
import importlib, sys, threading
from engine.store.database import _start_embedded
started = {}
def start():
    started["server"] = _start_embedded(sys.argv[2])
postgres = threading.Thread(target=start)
postgres.start()  # beside the imports: the engine cannot overlap the two any better
failed = []
for name in open(sys.argv[1], encoding="utf-8").read().split():
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(name)
postgres.join()
server = started["server"]
print("ready", len(failed), " ".join(failed[:5]), flush=True)
sys.stdin.readline()
server.cleanup()
"""


# ---------------------------------------------------------------- a local Binance


def _flat_candle(symbol: str, open_time: float, seconds: int) -> Candle:
    """Return a candle at the synthetic market's base price (the history it backfills)."""
    price = marketgen.PROFILES.get(symbol, (100.0,))[0]
    return price, price * 1.001, price * 0.999, price, 10.0


def local_binance() -> FakeBinance:
    """Return the fake Binance the engine starts against: a real-time synthetic market."""
    return FakeBinance(candles=_flat_candle, market=synthetic_market(hours=1.0))


# ---------------------------------------------------------------- settings and the process


def _toml(value: Any) -> str:
    """Return `value` as an inline TOML value (tables inline, strings JSON-escaped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def write_settings(path: Path, binance: FakeBinance) -> None:
    """Write the repository's settings with the feed, LLM and control endpoints made local."""
    raw = tomllib.loads((ROOT / "settings.toml").read_text(encoding="utf-8"))
    raw["feed"] |= {"futures_ws_url": binance.ws_url, "futures_rest_url": binance.rest_url}
    raw["control"] = {**raw.get("control", {}), "port": 0}
    for provider in raw["llm"]["providers"].values():
        provider["base_url"] = "http://127.0.0.1:9/v1"  # discard port; never asked before stop
    raw["database"] |= {"embedded_dir": "./data/pg", "spill_path": "./data/spill.jsonl"}
    path.write_text("".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in raw.items()),
                    encoding="utf-8")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # embedded, always
    env |= {"ANTHROPIC_API_KEY": "sk-bench", "OPENAI_API_KEY": "sk-bench",
            "DEEPSEEK_API_KEY": "sk-bench", "PYTHONUNBUFFERED": "1"}
    return env


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[dict[str, Any]]:
    while line := await stream.readline():
        with contextlib.suppress(ValueError):
            rec = orjson.loads(line)
            if isinstance(rec, dict):
                yield rec


async def start_once(workdir: Path, modules: list[str] | None = None) -> dict[str, float]:
    """Spawn run.py in `workdir`, return seconds to store.opened and engine.ready, then stop it.

    With `modules` (a list), the engine runs under `-X importtime` and the list receives the
    modules it had imported by `engine.ready`, in the order they finished importing."""
    marks: dict[str, float] = {}
    err = open(workdir / "stderr.log", "wb")  # noqa: ASYNC230 - a child's stderr
    flags = ["-X", "importtime"] if modules is not None else []
    t0 = timer()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *flags, str(ROOT / "run.py"), "--config", "settings.toml",
        "--log-format", "json", "--log-level", "info", cwd=workdir, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=err)
    try:
        assert proc.stdout is not None
        lines = _lines(proc.stdout)
        async with asyncio.timeout(READY_TIMEOUT_S):
            async for rec in lines:
                event = rec.get("event")
                if event in ("store.opened", "feed.connected", "engine.ready"):
                    marks.setdefault(event, timer() - t0)
                if event == "engine.ready":
                    marks["traders"] = len(rec.get("traders", []))
                    if modules is not None:
                        modules += _imported(workdir / "stderr.log")
                    break
        if "engine.ready" not in marks:
            raise RuntimeError(f"run.py exited without engine.ready: {_tail(workdir)}")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_TIMEOUT_S):
            async for _ in lines:
                pass
            code = await proc.wait()
        if code != 0:
            raise RuntimeError(f"run.py exited with {code} after SIGTERM: {_tail(workdir)}")
        return marks
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        err.close()


def _imported(stderr_log: Path) -> list[str]:
    """Return the modules `-X importtime` listed so far, in the order they finished."""
    names = []
    for line in stderr_log.read_text(errors="replace").splitlines():
        if line.startswith("import time:") and "imported package" not in line:
            names.append(line.rsplit("|", 1)[-1].strip())
    return names


async def floor_once(modules_file: Path, data_dir: Path) -> float:
    """Spawn the floor child; return seconds until its Postgres is up (then stop it)."""
    t0 = timer()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOR_CODE, str(modules_file), str(data_dir), cwd=ROOT,
        env=_env(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        async with asyncio.timeout(READY_TIMEOUT_S):
            line = await proc.stdout.readline()
        elapsed = timer() - t0
        if not line.startswith(b"ready"):
            raise RuntimeError(f"floor child did not start: {line[:300]!r}")
        proc.stdin.write(b"stop\n")
        await proc.stdin.drain()
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await proc.wait()
        return elapsed
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _tail(workdir: Path) -> str:
    text = (workdir / "stderr.log").read_text(errors="replace")
    return text[-600:]


def _stop_leftover_postgres(workdir: Path) -> None:
    """Stop a postmaster the engine failed to stop (by its pid file), so none outlives us."""
    pid_file = workdir / "data" / "pg" / "postmaster.pid"
    if pid_file.exists():
        with contextlib.suppress(ValueError, ProcessLookupError, IndexError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)


async def _trial(binance: FakeBinance, modules: list[str] | None = None,
                 floor_modules: Path | None = None) -> dict[str, dict[str, float]]:
    """One cold and one warm start of the engine, each followed by the floor's (if given)."""
    workdir = Path(tempfile.mkdtemp(prefix="arena-bench-start-"))
    floor_dir = workdir / "floor" / "pg"
    out: dict[str, dict[str, float]] = {}
    try:
        write_settings(workdir / "settings.toml", binance)
        for kind in ("cold", "warm"):
            out[kind] = await start_once(workdir, modules)
            if floor_modules is not None:
                out[kind]["floor"] = await floor_once(floor_modules, floor_dir)
        return out
    finally:
        _stop_leftover_postgres(workdir)
        _stop_leftover_postgres(workdir / "floor")
        shutil.rmtree(workdir, ignore_errors=True)


async def _measure(trials: int) -> tuple[list[dict[str, dict[str, float]]], FakeBinance, int]:
    async with local_binance() as binance:
        modules: list[str] = []
        await _trial(binance, modules)  # the warm-up lists the engine's modules
        listing = Path(tempfile.mkdtemp(prefix="arena-bench-mods-")) / "modules.txt"
        try:
            listing.write_text("\n".join(dict.fromkeys(modules)), encoding="utf-8")
            results = [await _trial(binance, None, listing) for _ in range(trials)]
        finally:
            shutil.rmtree(listing.parent, ignore_errors=True)
    return results, binance, len(set(modules))


def run(quick: bool = False) -> list[Result]:
    """Time cold and warm starts of run.py to engine.ready against a local Binance, each over
    the floor (the same imports plus the embedded Postgres start) measured in the same run."""
    trials = 1 if quick else 3
    results, binance, n_modules = asyncio.run(_measure(trials))
    how = (f"median of {trials} trials after a warm-up; live feed from a local websockets "
           f"server on 127.0.0.1, embedded Postgres; {int(results[0]['cold']['traders'])} "
           f"traders built; floor: {n_modules} modules the engine had imported by engine.ready "
           f"+ the embedded Postgres start")
    rows = []
    for kind, target, what in (("cold", COLD_TARGET_S, "fresh directory: initdb + migrations"),
                               ("warm", WARM_TARGET_S, "second start on the same data")):
        runs = [r[kind] for r in results]
        over = statistics.median(r["engine.ready"] - r["floor"] for r in runs)
        ready = statistics.median(r["engine.ready"] for r in runs)
        floor = statistics.median(r["floor"] for r in runs)
        store = statistics.median(r["store.opened"] for r in runs)
        rows.append(Result(
            f"startup.{kind}_over_floor_s", round(over, 2), "s", f"<= {target}",
            over <= target,
            f"{what}: engine.ready at {ready:.2f} s (database up at {store:.2f} s) over a floor "
            f"of {floor:.2f} s; runs engine {[round(r['engine.ready'], 2) for r in runs]}, "
            f"floor {[round(r['floor'], 2) for r in runs]}; {how}"))
        rows.append(Result(f"startup.{kind}_to_ready", round(ready, 2), "s", "", None,
                           f"the engine's figure behind startup.{kind}_over_floor_s"))
        rows.append(Result(f"startup.{kind}_floor", round(floor, 2), "s", "", None,
                           "imports + embedded Postgres start, same run"))
    del binance
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.name:30s} {r.value:>8} {r.unit:2s} {r.target or '-':8s} {r.met}  {r.detail}")
