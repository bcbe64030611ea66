"""A first run explains itself: Binance unreachable is one early line with the offline command,
the page's URL is logged, `engine.ready` names the stale symbols, and `run.py status | pause |
resume | trigger` command the running engine through the pid and URL files in its data
directory; an unlisted symbol or an unreachable history server is one line and exit code 2."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.app.preflight import UserError, check_exchange
from engine.market.fakebinance import FakeBinance
from engine.settings import Settings
from tests.backtest.support import run_backtest, write_config
from tests.support.process import Engine

ROOT = Path(__file__).resolve().parents[2]

SETTINGS = """
[engine]
ready_wait_seconds = 1
[feed]
symbols = ["BTCUSDT", "ETHUSDT"]
futures_ws_url = "ws://127.0.0.1:{closed}"
futures_rest_url = "http://127.0.0.1:{closed}"
backfill_candles = 0
backfill_higher_candles = 0
min_backoff_seconds = 5
[database]
spill_path = "{tmp}/data/spill.jsonl"
flush_ms = 50
[control]
port = 0
[[traders]]
name = "bh"
strategy = "buy_and_hold"
[[jobs]]
name = "trading_cycle"
run = "trading_cycle"
schedule = "daily"
daily_time = "{daily}"
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ARENA_CONTROL_TOKEN"}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=env)


async def test_offline_the_first_run_says_so_early_and_is_commanded_by_run_py(
        tmp_path: Path, database_url: str) -> None:
    config = tmp_path / "settings.toml"
    daily = time.strftime("%H:%M", time.gmtime(time.time() + 12 * 3600))
    config.write_text(SETTINGS.format(closed=closed_port(), tmp=tmp_path, daily=daily))
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and k != "ARENA_CONTROL_TOKEN"}
    env["DATABASE_URL"] = database_url
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(config), "--log-format", "json",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    engine = Engine(proc)
    try:
        offline = await engine.wait_for(lambda e: e.get("event") == "feed.unreachable",
                                        "feed.unreachable", timeout=15)
        assert time.monotonic() - started < 15
        assert offline["error"].startswith("connection to 127.0.0.1:") and "refused" in \
            offline["error"]
        assert "Binance is unreachable" in offline["hint"]
        assert offline["hint"].endswith(f"{ROOT / 'run.py'} demo`")
        control = await engine.wait_for(lambda e: e.get("event") == "control.started",
                                        "control.started")
        url = control["url"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url) and url.endswith(
            f":{control['port']}/")
        ready = await engine.wait_for(lambda e: e.get("event") == "engine.ready", "engine.ready")
        assert ready["stale"] == ["BTCUSDT", "ETHUSDT"]

        data = tmp_path / "data"
        assert (data / "arena.pid").read_text().strip() == str(proc.pid)
        assert (data / "control.url").read_text().strip() == url
        status = await asyncio.to_thread(command, config, "status")
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("status: running, version ")
        assert "stale: BTCUSDT, ETHUSDT" in status.stdout
        paused = await asyncio.to_thread(command, config, "pause")
        assert (paused.returncode, paused.stdout) == (0, "pause: scheduled jobs paused\n")
        again = await asyncio.to_thread(command, config, "pause")
        assert again.stdout == "pause: scheduled jobs paused (already)\n"
        resumed = await asyncio.to_thread(command, config, "resume")
        assert (resumed.returncode, resumed.stdout) == (0, "resume: scheduled jobs running\n")
        trigger = await asyncio.to_thread(command, config, "trigger")
        assert trigger.returncode == 0, trigger.stderr
        assert re.fullmatch(r"trigger: cycle \S+ \w+: .*\n", trigger.stdout)
        assert engine.events("control.triggered")

        engine.signal(signal.SIGTERM)
        assert await engine.exit_code(timeout=60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert len(engine.events("feed.unreachable")) == 1
    assert not (tmp_path / "data" / "arena.pid").exists()
    assert not (tmp_path / "data" / "control.url").exists()
    gone = await asyncio.to_thread(command, config, "status")
    assert gone.returncode == 2 and gone.stdout == "" and gone.stderr.count("\n") == 1
    assert "no engine answers at http://127.0.0.1:" in gone.stderr


def test_a_command_with_no_engine_running_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(f'[control]\nport = {closed_port()}\n')
    result = command(config, "trigger")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "trigger: no engine answers" in result.stderr


async def test_an_unlisted_symbol_is_refused_when_exchange_info_answers() -> None:
    fake = FakeBinance()
    await fake.start()
    url = fake.rest_url
    try:
        settings = Settings.model_validate({"feed": {"futures_rest_url": url,
                                                     "symbols": ["BTCUSDT", "FOOUSDT"]}})
        with pytest.raises(UserError, match=r"^unknown symbol FOOUSDT: not listed by "
                                            rf"{re.escape(url)} \(exchangeInfo, futures\)"):
            await check_exchange(settings)
        listed = Settings.model_validate({"feed": {"futures_rest_url": url,
                                                   "symbols": ["BTCUSDT"]}})
        assert await check_exchange(listed) is None
    finally:
        await fake.stop()


async def test_symbols_unchecked_when_exchange_info_fails_is_a_warning() -> None:
    fake = FakeBinance()
    fake.faults.server_errors = 5  # 503s: exchangeInfo does not answer
    await fake.start()
    url = fake.rest_url
    try:
        settings = Settings.model_validate({"feed": {"futures_rest_url": url}})
        event, fields = await check_exchange(settings) or ("", {})
    finally:
        await fake.stop()
    assert event == "feed.symbols_unchecked" and "not checked" in fields["detail"]


def test_an_unlisted_symbol_stops_run_py_in_one_line(tmp_path: Path) -> None:
    async def serve_and_run() -> subprocess.CompletedProcess[str]:
        fake = FakeBinance()
        await fake.start()
        url = fake.rest_url
        config = tmp_path / "settings.toml"
        config.write_text(f'[engine]\nlog_format = "json"\n[feed]\nfutures_rest_url = "{url}"\n'
                          'symbols = ["BTCUSDT", "FOOUSDT"]\n[control]\nenabled = false\n')
        try:
            return await asyncio.to_thread(command, config, "--dry-run")
        finally:
            await fake.stop()

    result = asyncio.run(serve_and_run())
    assert result.returncode == 2 and result.stdout == "", result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        "error: unknown symbol FOOUSDT: not listed by http://127.0.0.1:")


async def test_a_backtest_whose_history_server_is_unreachable_is_one_line_and_exit_2(
        tmp_path: Path) -> None:
    config = write_config(tmp_path, f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    code, out, err = await run_backtest(["--config", str(config), "--from", "2026-10-01T00:00",
                                         "--to", "2026-10-01T04:00"], None, timeout=60)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("backtest error: cannot fetch history from http://127.0.0.1:")
    assert "refused" in err and "run.py demo`" in err
    assert time.monotonic() - started < 15
    assert not any(json.loads(line).get("event") == "feed.rest_error"
                   for line in out.splitlines() if line.startswith("{"))
