"""Start-up truth with Binance unreachable: every failed connection says where, which attempt and
when the next; the engine never says ready, not even after it was told to stop."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

from tests.support.process import Engine, is_event

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sigterm_while_binance_is_unreachable_stops_without_engine_ready(
        tmp_path: Path) -> None:
    port = closed_port()
    config = tmp_path / "arena.toml"
    config.write_text(f"""
[engine]
log_format = "json"
[feed]
symbols = ["BTCUSDT"]
futures_ws_url = "ws://127.0.0.1:{port}"
futures_rest_url = "http://127.0.0.1:{port}"
backfill_candles = 0
backfill_higher_candles = 0
min_backoff_seconds = 0.2
max_backoff_seconds = 0.4
[control]
enabled = false
[[traders]]
name = "hodl"
strategy = "buy_and_hold"
""")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(config), "--dry-run",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    engine = Engine(proc)
    try:
        second = await engine.wait_for(
            lambda line: line.get("event") == "feed.connect_failed" and line["attempt"] == 2,
            "a second failed connection", 60)
        engine.signal(signal.SIGTERM)
        code = await engine.exit_code(60)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0, engine.tail()
    assert second["url"].startswith(f"ws://127.0.0.1:{port}/stream?streams=btcusdt@")
    assert 0.1 <= second["retry_in_s"] <= 0.4 and "ConnectionRefusedError" in second["error"]
    assert engine.events("engine.ready") == []
    assert engine.events("engine.stopping") and engine.events("engine.stopped")
    assert is_event("engine.stopped", exit_code=0)(engine.events("engine.stopped")[0])
