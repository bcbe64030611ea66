"""Running `python run.py backtest` against a local fake Binance, and reading its database."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TRADERS = """
[[traders]]
name = "buy_and_hold"
strategy = "buy_and_hold"

[[traders]]
name = "ema_fast"
strategy = "ema_cross"
params = { timeframe = "1m", size_pct = 10 }
"""


def write_config(tmp: Path, url: str, *, traders: str = TRADERS, name: str = "settings.toml",
                 cache: str = "history") -> Path:
    """Write a settings file for a backtest against `url` (control off, JSON logs)."""
    path = tmp / name
    path.write_text(f"""
[engine]
log_format = "json"
log_level = "info"

[feed]
futures_rest_url = "{url}"
backfill_candles = 120
backfill_higher_candles = 20

[backtest]
cache_dir = "{tmp / cache}"

[control]
enabled = false

[report]
dir = "{tmp / 'reports'}"
{traders}
""")
    return path


async def run_backtest(args: list[str], database_url: str | None, *, stdin: bytes = b"",
                       env: dict[str, str] | None = None,
                       timeout: float = 240) -> tuple[int, str, str]:
    """Run `python run.py backtest ARGS`; return (exit code, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.endswith("_API_KEY") and k != "DATABASE_URL"}
    if database_url:
        full_env["DATABASE_URL"] = database_url
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "backtest", *args, cwd=ROOT, env=full_env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    return proc.returncode or 0, out.decode(), err.decode()
