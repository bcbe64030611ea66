"""Restart of a real `python run.py` after a clean stop and after kill -9 rebuilds the accounts.

Each run replays the recorded sample market (no network, rule-based traders only) into the test's
own database. The second start (the same file: the same arena) must restore every trader from
the first run's latest persisted snapshot: its own "start" snapshots then carry the same cash,
margin, PnL, fees, positions (with stop-loss, take-profit and entry reason) and risk state.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from engine.store.recovery import load_state
from tests.support.store import fetch

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "sample.jsonl.gz"
pytestmark = pytest.mark.skipif(not (ROOT / "run.py").exists() or not SAMPLE.exists(),
                                reason="needs run.py and the recorded sample")

SETTINGS = """
[database]
spill_path = "{tmp}/spill.jsonl"
embedded_dir = "{tmp}/pg"
flush_ms = 50
[control]
enabled = false
[[traders]]
name = "buy_and_hold"
strategy = "buy_and_hold"
starting_capital = 10000
params = {{ symbol_weights = {{ BTCUSDT = 0.5, ETHUSDT = 0.3, SOLUSDT = 0.2 }}, leverage = 1 }}
[[traders]]
name = "ema_cross"
strategy = "ema_cross"
starting_capital = 10000
params = {ema_params}
[[jobs]]
name = "trading_cycle"
run = "trading_cycle"
schedule = "interval"
interval_seconds = 60
"""

EMA_PARAMS = ('{ fast = 20, slow = 50, atr_stop = 2.0, atr_take = 4.0, size_pct = 20, '
              'leverage = 3, timeframe = "1m" }')  # one line: TOML 1.0 inline tables can't break

# Fields that depend on the mark price at the moment of the snapshot, not on the account's state.
MARK_DEPENDENT = {"mark", "unrealized_pnl"}
# A replay starts its clock at 0 (1970), so the start snapshot rolls the risk day; live, a restart
# within the same UTC day keeps these. Everything else in the risk state must survive as is.
DAY_ROLL = {"sod_day", "sod_equity"}
ACCOUNT_FIELDS = ("cash", "margin", "realized_pnl", "fees", "funding", "peak_equity")


def write_settings(tmp: Path) -> Path:
    path = tmp / "settings.toml"
    path.write_text(SETTINGS.format(tmp=tmp, ema_params=EMA_PARAMS))
    return path


async def start(dsn: str, settings: Path, replay: Path, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "DATABASE_URL": dsn}
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "DEEPSEEK_API_KEY"):
        env.pop(key, None)
    return await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(settings), "--replay", str(replay),
        "--log-format", "json", *args, cwd=str(ROOT), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )


def comparable(snap: dict[str, Any]) -> dict[str, Any]:
    positions = snap["positions"]
    if isinstance(positions, str):
        positions = orjson.loads(positions)
    state = snap["state"] if isinstance(snap["state"], dict) else orjson.loads(snap["state"])
    return {
        **{f: snap[f] for f in ACCOUNT_FIELDS},
        "positions": [{k: v for k, v in p.items() if k not in MARK_DEPENDENT} for p in positions],
        "state": {k: v for k, v in state.items() if k not in DAY_ROLL},
    }


async def start_snapshots_of_last_run(dsn: str) -> dict[str, dict[str, Any]]:
    rows = await fetch(
        dsn,
        "SELECT s.* FROM account_snapshots s WHERE s.cause = 'start' "
        "AND s.id > (SELECT id FROM runs ORDER BY id DESC LIMIT 1) ORDER BY s.id",
    )
    return {r["trader"]: dict(r) for r in rows}


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


async def wait_for_open_positions(dsn: str, run: asyncio.subprocess.Process) -> None:
    """Poll the database until a snapshot with open positions is persisted."""
    for _ in range(3000):  # real process, real I/O: poll the database
        try:
            rows = await fetch(dsn, "SELECT count(*) AS n FROM account_snapshots "
                                    "WHERE positions::text <> '[]'")
        except asyncpg.UndefinedTableError:  # not migrated yet
            rows = [{"n": 0}]
        if rows[0]["n"] >= 1:
            return
        assert run.returncode is None, "the run ended before it could be stopped"
        await asyncio.sleep(0.02)
    raise AssertionError("no open position was persisted")


async def assert_second_start_restores(dsn: str, tmp: Path, settings: Path) -> None:
    # A replay's arena is its file's: the same file resumes it, any other file or live does not.
    before = await load_state(dsn, spill_path=str(tmp / "spill.jsonl"), mode="replay",
                              source=sha256_of(SAMPLE))
    assert set(before.accounts) == {"buy_and_hold", "ema_cross"}
    assert any(s["positions"] for s in before.accounts.values())  # something worth restoring
    assert before.reconciled == {}  # every snapshot agrees with the committed fills
    assert (await load_state(dsn, mode="live")).empty

    second = await start(dsn, settings, SAMPLE, "--resume")  # a replay's default is fresh
    assert await asyncio.wait_for(second.wait(), 120) == 0

    restored = await start_snapshots_of_last_run(dsn)
    assert set(restored) == set(before.accounts)
    for trader, snap in before.accounts.items():
        got, want = comparable(restored[trader]), comparable(snap)
        differing = {k: (got["state"].get(k), v) for k, v in want["state"].items()
                     if got["state"].get(k) != v}
        assert got == want, f"{trader}: state differs in {differing}"
    runs = await fetch(dsn, "SELECT fresh, mode, source FROM runs ORDER BY id")
    assert [(r["fresh"], r["mode"], r["source"]) for r in runs] == [
        (True, "replay", sha256_of(SAMPLE)), (False, "replay", sha256_of(SAMPLE))]


async def test_restart_after_a_clean_stop_rebuilds_the_same_accounts(
    database_url: str, tmp_path: Path
) -> None:
    settings = write_settings(tmp_path)
    # Stopped cleanly mid-file (a finished file has nothing left for --resume to continue).
    first = await start(database_url, settings, SAMPLE, "--fresh", "--speed", "100")
    await wait_for_open_positions(database_url, first)
    first.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(first.wait(), 180) == 0
    assert not (tmp_path / "spill.jsonl").exists() or not (tmp_path / "spill.jsonl").stat().st_size

    await assert_second_start_restores(database_url, tmp_path, settings)


async def test_restart_after_kill_9_rebuilds_what_the_persisted_rows_imply(
    database_url: str, tmp_path: Path
) -> None:
    settings = write_settings(tmp_path)
    first = await start(database_url, settings, SAMPLE, "--fresh")
    await wait_for_open_positions(database_url, first)  # then kill it mid-run
    first.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(first.wait(), 30) == -signal.SIGKILL

    await assert_second_start_restores(database_url, tmp_path, settings)
