"""kill -9 right after fills, over and over: every restart finds accounts their rows agree with.

A real `python run.py` replays the recorded sample at full speed with one LLM trader (the real
OpenAI SDK as the DeepSeek provider) answered by a local chat-completions server on 127.0.0.1:
every answer trades (open long or short, alternating, with stop-loss and take-profit 0.12 % away,
so positions also close on their own). As soon as the engine logs a fill it is killed with
SIGKILL; then, before each restart, the latest committed account snapshot must agree with the
committed fills and funding of its arena (realized PnL, fees, funding, open positions), and the
restarted engine's recovery must find nothing to reconcile.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.store.reconcile import MONEY_TOLERANCE
from tests.support.llm_server import TradingModel
from tests.support.process import Engine, is_event
from tests.support.store import fetch

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "sample.jsonl.gz"
KILLS = 10
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason="needs the recorded sample")

SETTINGS = """
[database]
spill_path = "{tmp}/spill.jsonl"
embedded_dir = "{tmp}/pg"
flush_ms = 20
[control]
enabled = false
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

async def start(dsn: str, settings: Path, tmp: Path) -> Engine:
    env = {**os.environ, "DATABASE_URL": dsn, "DEEPSEEK_API_KEY": "sk-local-test-not-a-key"}
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        env.pop(key, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(settings), "--replay", str(SAMPLE),
        "--live-llm", "--resume", "--log-format", "json", cwd=str(tmp), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    return Engine(proc)


ARENA = ("JOIN arena_runs('replay', $1) a "
         "ON t.id > a.id AND (a.next_id IS NULL OR t.id < a.next_id)")


async def account_disagreements(dsn: str, source: str) -> dict[str, Any]:
    """Return, per trader, where its latest committed snapshot disagrees with its rows."""
    snaps = await fetch(dsn, f"SELECT DISTINCT ON (t.trader) t.* FROM account_snapshots t "
                             f"{ARENA} ORDER BY t.trader, t.id DESC", source)
    fills = {r["trader"]: r for r in await fetch(
        dsn, f"SELECT t.trader, sum(t.realized_pnl) AS realized, sum(t.fee) AS fees FROM fills t "
             f"{ARENA} GROUP BY t.trader", source)}
    funding = {r["trader"]: r["amount"] for r in await fetch(
        dsn, f"SELECT t.trader, sum(t.amount) AS amount FROM funding t {ARENA} "
             "GROUP BY t.trader", source)}
    held: dict[str, dict[str, float]] = {}
    for r in await fetch(dsn, f"SELECT t.trader, t.symbol, sum(CASE WHEN t.side = 'buy' "
                              f"THEN t.qty ELSE -t.qty END) AS qty FROM fills t {ARENA} "
                              "GROUP BY t.trader, t.symbol", source):
        if abs(r["qty"]) > 1e-9:
            held.setdefault(r["trader"], {})[r["symbol"]] = round(r["qty"], 9)
    problems: dict[str, Any] = {}
    for s in snaps:
        trader, f = s["trader"], fills.get(s["trader"])
        rows = {"realized_pnl": f["realized"] if f else 0.0, "fees": f["fees"] if f else 0.0,
                "funding": funding.get(trader) or 0.0}
        diff = {k: (s[k], v) for k, v in rows.items() if abs(s[k] - v) > MONEY_TOLERANCE}
        positions = {p["symbol"]: round((1 if p["side"] == "long" else -1) * p["qty"], 9)
                     for p in json.loads(s["positions"])}
        if positions != held.get(trader, {}):
            diff["positions"] = (positions, held.get(trader, {}))
        if diff:
            problems[trader] = diff
    return problems


async def restarted_cleanly(engine: Engine, *, first: bool) -> None:
    """Wait for recovery; a restart resumes the replay's arena and finds nothing to rebuild."""
    loaded = await engine.wait_for(is_event("store.state_loaded"), "recovery", 60)
    if not first:
        assert loaded["traders"] == 1 and loaded["reconciled"] == [], loaded


async def test_kill_9_right_after_fills_never_leaves_an_account_its_rows_contradict(
    database_url: str, tmp_path: Path, trading_model: tuple[str, TradingModel]
) -> None:
    url, model = trading_model
    settings = tmp_path / "settings.toml"
    settings.write_text(SETTINGS.format(tmp=tmp_path, llm_url=url))
    source = hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    fills_seen = 0
    for kill in range(KILLS):
        engine = await start(database_url, settings, tmp_path)
        try:
            await restarted_cleanly(engine, first=not kill)
            # Kill right after the 1st, 2nd or 3rd fill of this run (a different moment each time).
            wanted = kill % 3 + 1
            await engine.wait_for(
                lambda line, e=engine, n=wanted: len(e.events("order.filled")) >= n, "fills", 60)
            engine.signal(signal.SIGKILL)
            assert await engine.exit_code(30) == -signal.SIGKILL
            fills_seen += len(engine.events("order.filled"))
        finally:
            if engine.proc.returncode is None:
                engine.proc.kill()
                await engine.proc.wait()
        assert await account_disagreements(database_url, source) == {}, f"after kill {kill + 1}"
    engine = await start(database_url, settings, tmp_path)
    try:
        await restarted_cleanly(engine, first=False)
        await engine.wait_for(is_event("engine.ready"), "ready", 60)
        engine.signal(signal.SIGTERM)  # the last restart stops cleanly: still consistent
        assert await engine.exit_code(60) == 0
    finally:
        if engine.proc.returncode is None:
            engine.proc.kill()
    assert await account_disagreements(database_url, source) == {}

    committed = await fetch(database_url, "SELECT count(*) AS n FROM fills")
    assert committed[0]["n"] > 0  # real trades were kept (those still in memory at a kill: not)
    assert fills_seen >= KILLS and model.calls > 0  # some fills are restored stops and takes
    runs = await fetch(database_url, "SELECT mode, source FROM runs ORDER BY id")
    assert [(r["mode"], r["source"]) for r in runs] == [("replay", source)] * (KILLS + 1)
