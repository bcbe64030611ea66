"""The trading cycle fires 2 s after each 5-minute mark (settings.toml), so the candles that close
on the mark are in its snapshot: the exchange's final frame of a candle arrives just after its
close, and a cycle exactly on the mark would see the 1-minute candle a minute older."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import tomllib
from pathlib import Path

from tests.support.live_engine import BUY_AND_HOLD, SAMPLE
from tests.support.store import fetch

ROOT = Path(__file__).resolve().parents[2]


def default_cycle_job() -> str:
    """Return the repository's own trading-cycle job as a TOML table."""
    jobs = tomllib.loads((ROOT / "settings.toml").read_text(encoding="utf-8"))["jobs"]
    job = next(j for j in jobs if j["run"] == "trading_cycle")
    assert job["interval_seconds"] == 300 and job["delay_seconds"] == 2
    return "[[jobs]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in job.items()) + "\n"


async def test_each_cycle_sees_the_candle_that_closed_on_its_mark(
        database_url: str, tmp_path: Path) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[database]\nspill_path = "{tmp_path}/spill.jsonl"\n'
                        f'[control]\nenabled = false\n[report]\non_exit = false\n'
                        + default_cycle_job() + BUY_AND_HOLD)
    env = {**os.environ, "DATABASE_URL": database_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(settings), "--replay", str(SAMPLE),
        "--fresh", "--no-alerts", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    rows = await fetch(database_url, "SELECT started_at, snapshot FROM cycles "
                                     "WHERE status = 'ok' ORDER BY started_at")
    assert len(rows) >= 15  # 1.5 h of market, a cycle every 5 minutes
    for row in rows:
        started = row["started_at"].timestamp()
        mark = math.floor(started / 300) * 300
        assert started == mark + 2
        snapshot = json.loads(row["snapshot"])
        for name, symbol in snapshot["symbols"].items():
            if name in snapshot["stale"]:
                continue
            assert symbol["indicators"]["1m"]["closed_until"] == mark, (name, started)
