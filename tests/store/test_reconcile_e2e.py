"""A database whose latest snapshot its fills contradict: recovery refuses, never invents.

The first `run.py` replays the sample with one rule-based trader and stops cleanly; then its last
fill row is deleted (what an older engine could lose in a kill -9 while the snapshot after it was
committed). The second start must refuse to resume (exit 1) with one line naming the trader,
the difference and the choices; the third, with `--accept-reconcile`, must log
`recovery.reconciled` with the differences and list the trader under `reconciled` in `/status`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.support.process import Engine, is_event

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "sample.jsonl.gz"
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason="needs the recorded sample")

SETTINGS = """
[database]
spill_path = "{tmp}/spill.jsonl"
embedded_dir = "{tmp}/pg"
flush_ms = 50
[control]
enabled = {control}
port = {port}
[[traders]]
name = "buy_and_hold"
strategy = "buy_and_hold"
starting_capital = 10000
params = {{ symbol_weights = {{ BTCUSDT = 0.5, ETHUSDT = 0.5 }}, leverage = 1 }}
[[jobs]]
name = "trading_cycle"
run = "trading_cycle"
schedule = "interval"
interval_seconds = 60
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start(dsn: str, tmp: Path, port: int, *args: str) -> Engine:
    settings = tmp / f"settings-{port}.toml"
    settings.write_text(SETTINGS.format(tmp=tmp, control="true" if port else "false",
                                        port=port))
    env = {**os.environ, "DATABASE_URL": dsn}
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "DEEPSEEK_API_KEY",
                "ARENA_CONTROL_TOKEN"):
        env.pop(key, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(settings), "--replay", str(SAMPLE),
        "--log-format", "json", *args, cwd=str(tmp), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    return Engine(proc)


async def test_a_snapshot_its_fills_contradict_stops_the_start_until_the_operator_chooses(
    database_url: str, tmp_path: Path
) -> None:
    # Stopped cleanly mid-file (a finished file has nothing left for --resume to continue).
    first = await start(database_url, tmp_path, 0, "--fresh", "--speed", "100")
    await first.wait_for(lambda line: len(first.events("order.filled")) >= 2, "fills", 120)
    first.signal(signal.SIGTERM)
    assert await first.exit_code(180) == 0
    conn = await asyncpg.connect(database_url)
    try:
        lost = await conn.fetchrow(
            "DELETE FROM fills WHERE id = (SELECT id FROM fills ORDER BY id DESC LIMIT 1) "
            "RETURNING trader, symbol, fee")
    finally:
        await conn.close()
    assert lost is not None and lost["trader"] == "buy_and_hold"

    refused = await start(database_url, tmp_path, 0, "--resume")  # a replay's default: fresh
    assert await refused.exit_code(60) == 1
    [line] = refused.events("recovery.refused")
    assert line["detail"].startswith("trader buy_and_hold (replay ")
    assert "fees: snapshot" in line["detail"] and "positions: snapshot" in line["detail"]
    assert "--fresh" in line["detail"] and "--accept-reconcile" in line["detail"]
    assert refused.events("recovery.reconciled") == [] and refused.events("engine.ready") == []

    port = free_port()
    second = await start(database_url, tmp_path, port, "--resume", "--speed", "1",
                         "--accept-reconcile")
    try:
        line = await second.wait_for(is_event("recovery.reconciled"), "reconciliation", 60)
        assert line["trader"] == "buy_and_hold"
        assert set(line["differences"]) >= {"fees", "positions"}
        await second.wait_for(is_event("engine.ready"), "ready", 60)
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{port}/status") as resp:
            assert resp.status == 200
            status = await resp.json()
        shown = status["reconciled"]["buy_and_hold"]
        assert abs(shown["fees"]["snapshot"] - shown["fees"]["rows"] - lost["fee"]) < 1e-6
        assert lost["symbol"] not in shown["positions"]["rows"]
        assert lost["symbol"] in shown["positions"]["snapshot"]
        assert status["arena"]["mode"] == "replay" and len(status["arena"]["source"]) == 64
        second.signal(signal.SIGTERM)
        assert await second.exit_code(60) == 0
    finally:
        if second.proc.returncode is None:
            second.proc.kill()
            await second.proc.wait()
