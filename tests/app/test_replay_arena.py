"""Replays repeat: each starts a fresh arena, so the same file twice gives the same report;
`--resume` continues the arena after its last persisted instant (simulated time never goes
backwards), and a recording with nothing left to continue says so in one line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import asyncpg

from tests.support.live_engine import SAMPLE
from tests.support.process import Engine

ROOT = Path(__file__).resolve().parents[2]


def config(tmp: Path) -> Path:
    path = tmp / "settings.toml"
    path.write_text(f"""
[database]
spill_path = "{tmp}/data/spill.jsonl"
flush_ms = 50
[control]
enabled = false
[report]
dir = "{tmp}/reports"
[[traders]]
name = "buy_and_hold"
strategy = "buy_and_hold"
[[traders]]
name = "random"
strategy = "random"
params = {{ seed = 3, mix = {{ open_long = 0.2, open_short = 0.2, close = 0.2, hold = 0.4 }} }}
""")
    return path


async def start(tmp: Path, database_url: str, *args: str) -> Engine:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["DATABASE_URL"] = database_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(config(tmp)), "--replay",
        str(SAMPLE), "--log-format", "json", *args, cwd=tmp, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    return Engine(proc)


async def finish(engine: Engine) -> tuple[int, str]:
    code = await engine.exit_code(timeout=120)
    assert engine.proc.stderr is not None
    return code, (await engine.proc.stderr.read()).decode()


def report(engine: Engine) -> dict:
    written = engine.events("report.written")
    assert len(written) == 1
    data = json.loads(Path(written[0]["json"]).read_text())
    return {"traders": data["traders"], "cycles": data["cycles"]}


async def rows(database_url: str) -> tuple[list, list]:
    conn = await asyncpg.connect(database_url)
    try:
        runs = await conn.fetch("SELECT mode, fresh FROM runs ORDER BY id")
        cycles = await conn.fetch("SELECT started_at FROM cycles ORDER BY id")
    finally:
        await conn.close()
    return [tuple(r) for r in runs], [c["started_at"] for c in cycles]


async def test_the_same_replay_twice_gives_the_same_report_in_a_fresh_arena_each_time(
        tmp_path: Path, database_url: str) -> None:
    first = await start(tmp_path, database_url)
    assert (await finish(first))[0] == 0
    second = await start(tmp_path, database_url)
    assert (await finish(second))[0] == 0
    for engine in (first, second):
        fresh = engine.events("arena.fresh")
        assert len(fresh) == 1 and fresh[0]["mode"] == "replay"
    a, b = report(first), report(second)
    assert a["cycles"] == 18 and {t["trader"] for t in a["traders"]} == {"buy_and_hold",
                                                                          "random"}
    assert any(t["fills"] > 0 for t in a["traders"] if t["trader"] == "random")
    assert a == b
    runs, _ = await rows(database_url)
    assert runs == [("replay", True), ("replay", True)]

    # nothing left to continue: one line, exit code 2, nothing replayed
    resumed = await start(tmp_path, database_url, "--resume")
    code, err = await finish(resumed)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: --resume: the arena of {SAMPLE} already reached ")
    assert "nothing to continue" in err
    assert not resumed.events("cycle.started")


async def test_resume_continues_after_the_last_persisted_instant(tmp_path: Path,
                                                                database_url: str) -> None:
    first = await start(tmp_path, database_url, "--speed", "300")
    await first.wait_for(lambda e: e.get("event") == "cycle.finished"
                         and len(first.events("cycle.finished")) >= 3, "three cycles")
    first.signal(signal.SIGTERM)
    assert (await finish(first))[0] == 0
    _, before = await rows(database_url)
    assert 3 <= len(before) < 18

    second = await start(tmp_path, database_url, "--resume")
    code, err = await finish(second)
    assert code == 0, err
    assert not second.events("arena.fresh")
    resumed = second.events("replay.resume")
    assert len(resumed) == 1 and resumed[0]["after"] is not None
    runs, cycles = await rows(database_url)
    assert runs == [("replay", True), ("replay", False)]
    # simulated time never went backwards, and the cycles the first run made are not redone
    assert cycles == sorted(cycles) and len(set(cycles)) == len(cycles)
    assert len(cycles) == 18
    finished = second.events("feed.replay_finished")
    assert finished and finished[0]["skipped_before_resume"] > 0
