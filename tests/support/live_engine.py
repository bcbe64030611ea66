"""A real `python run.py` replaying the recorded sample market, for the page and console tests.

Rule-based traders only (no API key, no network), a trading cycle every simulated minute, the
test's own Postgres database; stdout (logs, and tables in console mode) read by `Engine`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.support.process import Engine

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "sample.jsonl.gz"  # 1.5 h of Binance market

BUY_AND_HOLD = """
[[traders]]
name = "buy_and_hold"
strategy = "buy_and_hold"
starting_capital = 10000
params = { symbol_weights = { BTCUSDT = 0.5, ETHUSDT = 0.3, SOLUSDT = 0.2 }, leverage = 1 }
"""
# The snapshot has ema20/ema50; on 1m candles they cross a few times in the sample.
EMA_CROSS = """
[[traders]]
name = "ema_cross"
strategy = "ema_cross"
starting_capital = 10000
params = { fast = 20, slow = 50, size_pct = 20, leverage = 3, timeframe = "1m" }
"""
_SETTINGS = """
[database]
spill_path = "{tmp}/spill.jsonl"
embedded_dir = "{tmp}/pg"
flush_ms = 50
[control]
{control}
[[jobs]]
name = "trading_cycle"
run = "trading_cycle"
schedule = "interval"
interval_seconds = 60
"""


async def start_replay(database_url: str, tmp: Path, traders: str, *args: str,
                       control: bool = False) -> Engine:
    """Start the engine on the sample with `traders` (TOML) and extra CLI `args`; return it.

    With `control`, the control API listens on a free port of 127.0.0.1 (logged by
    `control.started`).
    """
    settings = tmp / "settings.toml"
    settings.write_text(
        _SETTINGS.replace("{tmp}", str(tmp)).replace(
            "{control}", 'enabled = true\nhost = "127.0.0.1"\nport = 0' if control
            else "enabled = false") + traders)
    env = {**os.environ, "DATABASE_URL": database_url}
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "DEEPSEEK_API_KEY", "ARENA_CONTROL_TOKEN"):
        env.pop(name, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(settings), "--replay", str(SAMPLE),
        "--fresh", *args,
        cwd=tmp, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    return Engine(proc)


async def stop_if_running(engine: Engine) -> None:
    """Kill the engine if a test left it running."""
    if engine.proc.returncode is None:
        engine.proc.kill()
        await engine.proc.wait()
