"""Storage faults inside a whole engine: it halts instead of losing rows, and resumes by itself.

A real `python run.py` replays the recorded sample at full speed with one LLM trader answered by
a local server (every answer trades, with stops and takes 0.12 % away, so trigger fills happen
too), on the test's own Postgres. For each fault: (a) the spill file's filesystem full (a 4 MiB
tmpfs mounted inside `unshare -m`, so a crashed test leaves no mount behind) during an outage,
then cleared; (b) a trigger raising `check_violation` on `fills`, then dropped; (c) a proxy
swallowing a COMMIT while the server keeps the session. Each ends with SIGTERM and a restart (d),
then by SQL: every fill the engine logged is in the database exactly once, no snapshot is ahead
of its fills, every account equals its fills and funding, recovery finds nothing to rebuild (no
position reappears), and the engine halted while the fault lasted (no fill in between) and
resumed after (the COMMIT lost in a partition is an outage with the rows in memory: trading goes
on, /health turns 503 until the retry commits).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from engine.store.reconcile import MONEY_TOLERANCE
from tests.store.test_crash_e2e import account_disagreements
from tests.support.llm_server import TradingModel
from tests.support.process import Engine, is_event
from tests.support.store import CommitEater, PgProxy, eventually, fetch

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "sample.jsonl.gz"
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason="needs the recorded sample")

SETTINGS = """
[database]
spill_path = "{spill_dir}/spill.jsonl"
embedded_dir = "{tmp}/pg"
last_resort_dir = "{tmp}/last"
flush_ms = 20
max_buffer_rows = 100
max_backoff_seconds = 0.5
write_timeout_seconds = 2
lock_timeout_seconds = 1
unhealthy_after_seconds = 1
[control]
enabled = true
host = "127.0.0.1"
port = 0
[llm]
deadline_seconds = 10
[llm.providers.deepseek]
base_url = "{llm_url}"
max_retries = 0
[llm.prices."deepseek-chat"]
input = 0.27
output = 1.10
[llm_cache]
replay = false
[[traders]]
name = "deepseek"
strategy = "llm"
provider = "deepseek"
model = "deepseek-chat"
starting_capital = 10000
[[jobs]]
name = "trading_cycle"
run = "trading_cycle"
schedule = "interval"
interval_seconds = 60
"""


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


async def start(dsn: str, tmp: Path, llm_url: str, *args: str, spill_dir: Path | None = None,
                tmpfs: bool = False) -> Engine:
    spill_dir = spill_dir or tmp / "spill"
    settings = tmp / "settings.toml"
    settings.write_text(SETTINGS.format(tmp=tmp, spill_dir=spill_dir, llm_url=llm_url))
    env = {**os.environ, "DATABASE_URL": dsn, "DEEPSEEK_API_KEY": "sk-local-test-not-a-key"}
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ARENA_CONTROL_TOKEN"):
        env.pop(key, None)
    command = [sys.executable, str(ROOT / "run.py"), "--config", str(settings), "--replay",
               str(SAMPLE), "--live-llm", "--log-format", "json", *args]
    if tmpfs:  # the spill directory is a 4 MiB tmpfs only this process (namespace) sees
        spill_dir.mkdir(parents=True, exist_ok=True)
        command = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   f'mount -t tmpfs -o size=4m tmpfs "{spill_dir}" && exec "$@"', "sh",
                   *command]
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=str(tmp), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    return Engine(proc)


async def logged(engine: Engine, event: str, times: int) -> None:
    """Wait (bounded) until the engine logged `event` `times` times."""
    async def enough() -> bool:
        return len(engine.events(event)) >= times

    try:
        await eventually(enough, 3000)
    except AssertionError:
        names = Counter(line.get("event") for line in engine.lines)
        raise AssertionError(f"{event} logged {names[event]} times: {names.most_common(8)} "
                             f"{len(engine.raw)} raw") from None


async def control_url(engine: Engine) -> str:
    line = await engine.wait_for(is_event("control.started"), "control API", 60)
    return f"http://127.0.0.1:{line['port']}"


async def health(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as resp:
        return resp.status, await resp.json()


async def stop(engine: Engine) -> int:
    if engine.proc.returncode is None:
        engine.signal(signal.SIGTERM)
    return await engine.exit_code(60)


async def restart_finds_nothing_to_rebuild(dsn: str, tmp: Path, llm_url: str) -> Engine:
    engine = await start(dsn, tmp, llm_url, "--resume")  # a replay's default is a fresh arena
    try:
        loaded = await engine.wait_for(is_event("store.state_loaded"), "recovery", 60)
        assert loaded["traders"] == 1 and loaded["reconciled"] == [], loaded
        await engine.wait_for(is_event("engine.ready"), "ready", 60)
        assert await stop(engine) == 0
    finally:
        if engine.proc.returncode is None:
            engine.proc.kill()
            await engine.proc.wait()
    assert engine.events("recovery.refused") == []
    return engine


def halted_then_resumed(engine: Engine) -> None:
    """The engine halted, resumed, and nothing traded in between."""
    names = [line.get("event") for line in engine.lines]
    assert "trading.halted" in names and "trading.resumed" in names, names
    start, end = names.index("trading.halted"), names.index("trading.resumed")
    assert start < end
    between = names[start:end]
    # No fill while halted (a cycle that executed before the halt may still finish), and the
    # replay consumed no frame: simulated time stood still.
    assert "order.filled" not in between and "feed.replay_paused" in between


async def history_is_whole(dsn: str, *engines: Engine) -> None:
    """Every fill logged is stored exactly once; no snapshot is ahead of its fills; accounts
    equal their fills and funding."""
    logged = Counter((e["trader"], e["symbol"], e["side"], e["quantity"], e["price"], e["reason"])
                     for engine in engines for e in engine.events("order.filled"))
    stored = Counter((r["trader"], r["symbol"], r["side"], r["qty"], r["price"], r["reason"])
                     for r in await fetch(dsn, "SELECT * FROM fills"))
    assert logged and stored == logged
    ahead = await fetch(dsn, """
        SELECT s.id, s.fees, s.realized_pnl,
               coalesce((SELECT sum(f.fee) FROM fills f WHERE f.trader = s.trader
                         AND f.id < s.id), 0) AS fill_fees,
               coalesce((SELECT sum(f.realized_pnl) FROM fills f WHERE f.trader = s.trader
                         AND f.id < s.id), 0) AS fill_pnl
        FROM account_snapshots s""")
    assert ahead and [r["id"] for r in ahead if abs(r["fees"] - r["fill_fees"]) > MONEY_TOLERANCE
                      or abs(r["realized_pnl"] - r["fill_pnl"]) > MONEY_TOLERANCE] == []
    source = hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert await account_disagreements(dsn, source) == {}


@pytest.mark.skipif(not can_mount(), reason="needs root and unshare for a private tmpfs")
async def test_a_full_spill_filesystem_during_an_outage_halts_and_resumes_losing_nothing(
    database_url: str, tmp_path: Path, trading_model: tuple[str, TradingModel]
) -> None:
    llm_url, _ = trading_model
    proxy = PgProxy(database_url)
    await proxy.start()
    spill_dir = tmp_path / "spillfs"
    engine = await start(proxy.dsn, tmp_path, llm_url, "--fresh", spill_dir=spill_dir,
                         tmpfs=True)
    try:
        url = await control_url(engine)
        await engine.wait_for(is_event("order.filled"), "a first fill", 60)
        mounted = Path(f"/proc/{engine.proc.pid}/root") / spill_dir.relative_to("/")
        filler = mounted / "filler"
        with pytest.raises(OSError) as full, filler.open("wb") as f:
            while True:  # fill the tmpfs to its last block
                f.write(b"\0" * 65536)
                f.flush()
        assert full.value.errno == errno.ENOSPC

        await proxy.refuse()  # Postgres is gone, and so is the room for the spill
        await engine.wait_for(is_event("trading.halted"), "the halt", 30)
        await logged(engine, "writer.spill_failed", 2)  # retried
        status, body = await health(url)
        assert status == 503 and body["halted"].startswith("halted: storage (rows can be")

        filler.unlink()  # room again: the spill takes the rows and trading resumes
        await engine.wait_for(is_event("trading.resumed"), "the resume", 30)
        await proxy.start()
        await engine.wait_for(is_event("writer.recovered"), "Postgres back", 30)
        assert await stop(engine) == 0
    finally:
        if engine.proc.returncode is None:
            engine.proc.kill()
            await engine.proc.wait()
        await proxy.close()
    halted_then_resumed(engine)
    assert engine.events("writer.last_resort") == [] and engine.events("writer.rows_lost") == []
    again = await restart_finds_nothing_to_rebuild(database_url, tmp_path, llm_url)
    await history_is_whole(database_url, engine, again)


async def test_a_trigger_refusing_fills_halts_until_dropped_and_nothing_commits_past_it(
    database_url: str, tmp_path: Path, trading_model: tuple[str, TradingModel]
) -> None:
    llm_url, _ = trading_model
    engine = await start(database_url, tmp_path, llm_url, "--fresh")
    conn = await asyncpg.connect(database_url)
    try:
        url = await control_url(engine)
        await engine.wait_for(is_event("order.filled"), "a first fill", 60)
        await conn.execute("""
            CREATE FUNCTION refuse_fill() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE check_violation USING MESSAGE = 'fills refused by the test'; END $$;
            CREATE TRIGGER refuse_fill BEFORE INSERT ON fills
                FOR EACH ROW EXECUTE FUNCTION refuse_fill();""")
        refused = await engine.wait_for(is_event("writer.row_refused"), "a refused fill", 60)
        assert refused["table"] == "fills" and "23514" in refused["error"]
        await engine.wait_for(is_event("trading.halted"), "the halt", 10)
        await logged(engine, "writer.retrying_refused", 3)
        status, body = await health(url)
        assert status == 503 and f"row {refused['id']} refused by fills" in body["halted"]
        held = await fetch(database_url, "SELECT count(*) AS n FROM fills WHERE id = $1",
                           refused["id"])
        assert held[0]["n"] == 0

        await conn.execute("DROP TRIGGER refuse_fill ON fills")
        await engine.wait_for(is_event("trading.resumed"), "the resume", 30)
        assert await stop(engine) == 0
    finally:
        await conn.close()
        if engine.proc.returncode is None:
            engine.proc.kill()
            await engine.proc.wait()
    halted_then_resumed(engine)
    recorded = await fetch(database_url, "SELECT id::text AS id FROM quarantine")
    assert refused["id"] in [r["id"] for r in recorded]  # recorded, never quarantined
    again = await restart_finds_nothing_to_rebuild(database_url, tmp_path, llm_url)
    await history_is_whole(database_url, engine, again)


async def test_a_commit_lost_in_a_partition_is_bounded_and_its_locks_freed(
    database_url: str, tmp_path: Path, trading_model: tuple[str, TradingModel]
) -> None:
    llm_url, _ = trading_model
    eater = CommitEater(database_url)
    await eater.start()
    engine = await start(eater.dsn, tmp_path, llm_url, "--fresh")
    try:
        url = await control_url(engine)
        await engine.wait_for(is_event("order.filled"), "a first fill", 60)
        eater.armed = True
        unhealthy = None
        for _ in range(200):  # /health turns 503 once nothing committed for 1 s
            status, body = await health(url)
            if status == 503:
                unhealthy = body
                break
            await asyncio.sleep(0.02)
        assert unhealthy is not None and any(
            p.startswith("nothing committed for") for p in unhealthy["problems"])
        await engine.wait_for(is_event("writer.backend_terminated"), "the old session ended", 30)
        await engine.wait_for(is_event("writer.recovered"), "the retry committing", 30)
        assert eater.eaten == 1
        assert await stop(engine) == 0
    finally:
        if engine.proc.returncode is None:
            engine.proc.kill()
            await engine.proc.wait()
        await eater.close()
    again = await restart_finds_nothing_to_rebuild(database_url, tmp_path, llm_url)
    await history_is_whole(database_url, engine, again)
