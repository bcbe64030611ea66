"""No secret anywhere: `python run.py` against three providers that answer 401 echoing the key
they were given, with `--record`, the control API, alerts to a local webhook receiver (JSON,
Slack, Discord, Telegram), a report on exit, then a second run in the console log format and
`run.py db --query`.

Afterwards no key, no webhook URL or token and no database password is found in: the JSON and
console logs, a `pg_dump` of the database, the spill file (when there is one), the recording,
the alert bodies, the report files, `/status`, `/metrics`, `/events`, `/traders/...` or the
query output. Each place is also checked to hold what it should (the 401s, redacted), so the
test cannot pass on an empty run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engine.market.fakebinance import FakeBinance
from tests.app.test_engine_process import PRICES, _with_password
from tests.support.feed import fresh_prices
from tests.support.process import Engine, is_event

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"ANTHROPIC_API_KEY": "sk-ant-api03-LEAKTEST-anthropic-Q7w2e9r4t6y8u1i3",
        "OPENAI_API_KEY": "sk-proj-LEAKTEST-openai-Z5x7c9v1b3n5m7k9",
        "DEEPSEEK_API_KEY": "sk-LEAKTEST-deepseek-4f8e2d6c0b9a7e5d"}
HOOKS = {"ARENA_T_JSON": "/hook/json-leaktest-9d3f", "ARENA_T_SLACK": "/hook/slack-leaktest-2b8a",
         "ARENA_T_DISCORD": "/hook/discord-leaktest-6c1e"}
TELEGRAM = "987654321:AAH-leaktest-telegram-token-0123456789"
DB_PASSWORD = "pw-LEAKTEST-db-5e1a"
TRADERS = {"claude": ("anthropic", "claude-sonnet-4-6"), "gpt": ("openai", "gpt-4o"),
           "ds": ("deepseek", "deepseek-chat")}

SETTINGS = """
[engine]
shutdown_grace_seconds = 5
[feed]
symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
futures_ws_url = "{ws}"
futures_rest_url = "{rest}"
backfill_candles = 0
backfill_higher_candles = 0
[llm]
deadline_seconds = 20
max_consecutive_failures = 1
[llm.providers.anthropic]
base_url = "{http}"
max_retries = 0
[llm.providers.openai]
base_url = "{http}/v1"
max_retries = 0
[llm.providers.deepseek]
base_url = "{http}"
max_retries = 0
[database]
spill_path = "{tmp}/spill.jsonl"
flush_ms = 50
[control]
port = {port}
[report]
dir = "{tmp}/reports"
[alerts]
dedup_seconds = 0
{hooks}
{traders}
[[jobs]]
name = "trading_cycle"
run = "trading_cycle"
schedule = "daily"
daily_time = "{daily}"
timeout_seconds = 60
"""


def secrets() -> list[str]:
    """Every secret value of the run; any of them found anywhere fails the test."""
    return [*KEYS.values(), *HOOKS.values(), TELEGRAM, DB_PASSWORD]


def leaks(text: str) -> list[str]:
    return [s for s in secrets() if s in text]


class Services:
    """The fake Binance, the three LLM APIs answering 401, and the webhook receiver."""

    def __init__(self, binance: FakeBinance) -> None:
        self.binance = binance
        self.http = ""
        self.llm_calls: list[str] = []
        self.alerts: list[tuple[str, dict[str, Any]]] = []
        self.alert_arrived = asyncio.Event()

    async def anthropic(self, request: web.Request) -> web.Response:
        self.llm_calls.append("anthropic")
        key = (request.headers.get("x-api-key")  # older SDKs; newer ones send a bearer
               or request.headers.get("Authorization", "").removeprefix("Bearer "))
        assert key, "the SDK sent its key"
        return web.json_response({"type": "error", "error": {
            "type": "authentication_error",
            "message": f"invalid x-api-key: Incorrect API key provided: {key}"}}, status=401)

    async def openai_like(self, request: web.Request) -> web.Response:
        self.llm_calls.append(request.path)
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        assert key, "the SDK sent its key"
        return web.json_response({"error": {
            "message": f"Incorrect API key provided: {key}. You can find your API key at "
                       "https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}},
            status=401)

    async def hook(self, request: web.Request) -> web.Response:
        self.alerts.append((request.path, await request.json()))
        self.alert_arrived.set()
        return web.json_response({"ok": True})


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    async with FakeBinance(symbols=PRICES, candles=None) as binance:  # no candle history
        svc = Services(binance)
        app = web.Application()
        app.router.add_post("/v1/messages", svc.anthropic)
        app.router.add_post("/v1/chat/completions", svc.openai_like)
        app.router.add_post("/chat/completions", svc.openai_like)
        app.router.add_post("/hook/{name}", svc.hook)
        app.router.add_post("/bot{token}/sendMessage", svc.hook)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        svc.http = f"http://127.0.0.1:{runner.addresses[0][1]}"

        try:
            async with fresh_prices(binance, PRICES):
                yield svc
        finally:
            await runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_settings(svc: Services, tmp: Path, port: int) -> Path:
    hooks = "".join(f'[[alerts.webhooks]]\nformat = "{fmt}"\nurl_env = "{env}"\n'
                    for fmt, env in (("json", "ARENA_T_JSON"), ("slack", "ARENA_T_SLACK"),
                                     ("discord", "ARENA_T_DISCORD")))
    hooks += (f'[[alerts.webhooks]]\nformat = "telegram"\nurl_env = "ARENA_T_TG"\n'
              f'chat_id = "-100"\ntelegram_api_url = "{svc.http}"\n')
    traders = "".join(f'[[traders]]\nname = "{name}"\nstrategy = "llm"\nprovider = "{p}"\n'
                      f'model = "{m}"\n' for name, (p, m) in TRADERS.items())
    path = tmp / "settings.toml"
    path.write_text(SETTINGS.format(
        ws=svc.binance.ws_url, rest=svc.binance.rest_url, http=svc.http, tmp=tmp, port=port,
        hooks=hooks, traders=traders,
        daily=time.strftime("%H:%M", time.gmtime(time.time() + 12 * 3600))))
    return path


def environment(svc: Services, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ARENA_CONTROL_TOKEN"}
    env.update(KEYS)
    env.update({name: svc.http + path for name, path in HOOKS.items()})
    env.update({"ARENA_T_TG": TELEGRAM, "DATABASE_URL": _with_password(database_url)})
    return env


async def start(settings: Path, env: dict[str, str], cwd: Path, *args: str) -> Engine:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(settings), *args, cwd=cwd,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    return Engine(proc)


async def read_stream(url: str, into: list[bytes]) -> None:
    """Collect the live page's event stream until cancelled."""
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        async for chunk in resp.content.iter_any():
            into.append(chunk)


async def get(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        assert resp.status == 200, url
        return await resp.text()


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


async def test_keys_echoed_by_every_provider_leak_nowhere(services: Services, database_url: str,
                                                          tmp_path: Path) -> None:
    port = free_port()
    settings = write_settings(services, tmp_path, port)
    env = environment(services, database_url)
    base = f"http://127.0.0.1:{port}"
    recording = tmp_path / "session.jsonl"

    # Run 1: JSON logs, --record, the control API read while the 401s happen.
    engine = await start(settings, env, tmp_path, "--log-format", "json", "--record",
                         str(recording))
    await engine.wait_for(is_event("control.started"), "control.started")
    await engine.wait_for(is_event("engine.ready"), "engine.ready")
    stream: list[bytes] = []
    reader = asyncio.create_task(read_stream(base + "/events", stream))
    await engine.wait_for(is_event("control.stream_opened"), "the event stream")
    engine.signal(signal.SIGUSR1)
    done = await engine.wait_for(is_event("cycle.finished", trigger="manual"), "the cycle")
    assert done["traders"] == 3 and done["valid"] == 0
    for _ in range(3 * 4 + 4):  # engine_started and 3 cool-downs on 4 webhooks
        if len(services.alerts) >= 16:
            break
        services.alert_arrived.clear()
        await asyncio.wait_for(services.alert_arrived.wait(), 20)
    answers = {path: await get(base + path) for path in (
        "/status", "/metrics", "/leaderboard", "/jobs", "/traders/claude", "/traders/gpt",
        "/traders/ds")}
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    engine.signal(signal.SIGTERM)
    assert await engine.exit_code(timeout=30) == 0, engine.tail()
    json_logs = "".join(engine.raw)

    # Run 2: the console format, one more cycle of 401s (the cool-down is per process).
    console = await start(settings, env, tmp_path, "--log-format", "console", "--once")
    assert await console.exit_code(timeout=60) == 0, console.tail()
    console_logs = "".join(console.raw)

    query = await asyncio.to_thread(
        run_cli, env, tmp_path, "db", "--config", str(settings), "--no-psql", "--query",
        "SELECT trader, provider, error FROM decisions ORDER BY ts")
    dump = (await asyncio.to_thread(
        subprocess.run, ["pg_dump", "--no-owner", database_url], capture_output=True, text=True,
        timeout=60, check=True)).stdout
    reports = {p.name: p.read_text(errors="replace") for p in (tmp_path / "reports").iterdir()}
    spill = tmp_path / "spill.jsonl"
    places = {
        "json logs": json_logs, "console logs": console_logs, "database dump": dump,
        "spill file": spill.read_text() if spill.exists() else "",
        "recording": recording.read_text(), "query output": query.stdout + query.stderr,
        "alert bodies": json.dumps([body for _, body in services.alerts]),
        "/events": b"".join(stream).decode(),
        **{f"report {name}": text for name, text in reports.items()},
        **answers,
    }
    assert {place: leaks(text) for place, text in places.items() if leaks(text)} == {}

    # ... and every place holds what it should: the 401s, with the key redacted.
    assert sorted(set(services.llm_calls)) == ["/chat/completions", "/v1/chat/completions",
                                               "anthropic"]
    echoed = "Incorrect API key provided: ***"
    assert dump.count(echoed) == 6  # 3 traders x 2 runs
    assert query.returncode == 0 and query.stdout.count(echoed) == 6
    assert recording.read_text().count(echoed) >= 3
    invalid = [line for line in engine.lines if line.get("event") == "decision.invalid"]
    assert len(invalid) == 3 and all(echoed in line["reason"] for line in invalid)
    assert "http 401" in console_logs and "***" in console_logs
    cooldowns = [body for _, body in services.alerts if "cooling down" in json.dumps(body)]
    # 3 traders on 4 webhooks in each run
    assert len(cooldowns) == 24 and all(echoed in json.dumps(b) for b in cooldowns)
    assert echoed in places["/events"] and echoed in answers["/traders/gpt"]
    assert "arena_" in answers["/metrics"] and json.loads(answers["/status"])
    assert reports and any(name.endswith(".html") for name in reports)
