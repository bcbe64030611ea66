"""A real `python run.py` process: signals, --once, orderly shutdown, and no secret in any log line.

The engine runs against the fake Binance on 127.0.0.1 (engine.market.fakebinance: combined-stream
websocket, prices kept fresh by the test, and REST), a local OpenAI-compatible server that
answers with a recorded GPT-4o response after a delay the test controls, and the test's own
Postgres database.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web

from engine.market.fakebinance import FakeBinance
from engine.traders.fixtures import load_fixture
from tests.support.feed import fresh_prices
from tests.support.process import Engine, is_event

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-test-NEVER-LOG-THIS-3f9a"
DB_PASSWORD = "pw-NEVER-LOG-7c21"
PRICES = {"BTCUSDT": 97_000.0, "ETHUSDT": 3_400.0, "SOLUSDT": 180.0}

SETTINGS = """
[engine]
shutdown_grace_seconds = {grace}
[feed]
symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
futures_ws_url = "{ws}"
futures_rest_url = "{rest}"
backfill_candles = 0
backfill_higher_candles = 0
[llm]
deadline_seconds = 60
[llm.providers.openai]
base_url = "{http}/v1"
max_retries = 0
[database]
spill_path = "{tmp}/spill.jsonl"
flush_ms = 50
[control]
enabled = false
[[traders]]
name = "gpt-4o"
strategy = "llm"
provider = "openai"
model = "gpt-4o"
{extra}
[[jobs]]
name = "trading_cycle"
run = "trading_cycle"
schedule = "daily"
daily_time = "{daily}"
timeout_seconds = 120
"""


@dataclass
class LocalServices:
    """The fake Binance (websocket + REST) and an LLM HTTP server, both on 127.0.0.1."""

    binance: FakeBinance
    http_url: str  # the LLM server's
    llm_delay: float = 0.0
    llm_requests: int = 0
    llm_arrived: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def services() -> AsyncIterator[LocalServices]:
    fixture = load_fixture("openai/json_schema")
    body = json.dumps(fixture["response"]["body"])

    async def chat(request: web.Request) -> web.Response:
        svc.llm_requests += 1
        svc.llm_arrived.set()
        await asyncio.sleep(svc.llm_delay)  # the model "thinking": the server side of the test
        return web.Response(
            text=body, content_type="application/json", headers={"x-request-id": "req_local_1"}
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    # exchangeInfo lists these symbols with Binance's filters; no candle history
    async with FakeBinance(symbols=PRICES, candles=None) as binance:
        svc = LocalServices(binance, f"http://127.0.0.1:{runner.addresses[0][1]}")

        try:
            async with fresh_prices(binance, PRICES):
                yield svc
        finally:
            await runner.cleanup()


def _with_password(url: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.netloc.split("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{DB_PASSWORD}@{host}"))


@pytest.fixture
def start_engine(services: LocalServices, database_url: str, tmp_path: Path):
    started: list[Engine] = []

    async def start(*args: str, grace: float = 10, extra: str = "") -> Engine:
        # A daily job far from now: nothing fires on schedule during the test.
        daily = time.strftime("%H:%M", time.gmtime(time.time() + 12 * 3600))
        settings = tmp_path / "settings.toml"
        settings.write_text(
            SETTINGS.format(
                grace=grace,
                ws=services.binance.ws_url,
                rest=services.binance.rest_url,
                http=services.http_url,
                tmp=tmp_path,
                daily=daily,
                extra=extra,
            )
        )
        env = {
            **os.environ,
            "OPENAI_API_KEY": API_KEY,
            "DATABASE_URL": _with_password(database_url),
        }
        for name in ("ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "ARENA_CONTROL_TOKEN"):
            env.pop(name, None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "run.py"),
            "--config",
            str(settings),
            "--log-format",
            "json",
            *args,
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        engine = Engine(proc)
        started.append(engine)
        return engine

    yield start
    for engine in started:
        if engine.proc.returncode is None:
            engine.proc.kill()


async def cycles_in_db(database_url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("select trigger, status from cycles order by started_at")
        return [(r["trigger"], r["status"]) for r in rows]
    finally:
        await conn.close()


async def test_sigusr1_runs_a_cycle_and_sigterm_exits_0(start_engine, services, database_url):
    engine = await start_engine()
    await engine.wait_for(is_event("engine.ready"), "engine.ready")
    engine.signal(signal.SIGUSR1)
    done = await engine.wait_for(is_event("cycle.finished", trigger="manual"), "manual cycle")
    assert done["status"] == "ok" and done["traders"] == 1 and done["valid"] == 1
    made = await engine.wait_for(is_event("decision.made"), "decision.made")
    assert made["cycle_id"] == done["cycle_id"]
    engine.signal(signal.SIGUSR2)
    await engine.wait_for(is_event("scheduler.paused"), "pause")
    engine.signal(signal.SIGTERM)
    assert await engine.exit_code(timeout=30) == 0
    assert await cycles_in_db(database_url) == [("manual", "ok")]
    # Every line is JSON, and no secret reached any of them.
    assert all(line.startswith("{") for line in engine.raw if line.strip()), engine.tail()
    text = "".join(engine.raw)
    assert API_KEY not in text and DB_PASSWORD not in text


async def test_sigterm_during_a_cycle_lets_it_finish_within_the_grace_time(
    start_engine, services, database_url
):
    services.llm_delay = 3.0
    engine = await start_engine(grace=20)
    await engine.wait_for(is_event("engine.ready"), "engine.ready")
    engine.signal(signal.SIGUSR1)
    await asyncio.wait_for(services.llm_arrived.wait(), 30)
    engine.signal(signal.SIGTERM)
    engine.signal(signal.SIGUSR1)  # a trigger during shutdown is refused, not run
    assert await engine.exit_code(timeout=30) == 0
    assert engine.events("engine.waiting_for_cycle")
    (done,) = engine.events("cycle.finished")
    assert done["status"] == "ok" and done["valid"] == 1
    assert await cycles_in_db(database_url) == [("manual", "ok")]
    assert services.llm_requests == 1


async def test_cycle_past_the_grace_time_is_cancelled_and_still_recorded(
    start_engine, services, database_url
):
    services.llm_delay = 120.0
    engine = await start_engine(grace=1)
    await engine.wait_for(is_event("engine.ready"), "engine.ready")
    engine.signal(signal.SIGUSR1)
    await asyncio.wait_for(services.llm_arrived.wait(), 30)
    engine.signal(signal.SIGTERM)
    assert await engine.exit_code(timeout=30) == 0
    assert engine.events("engine.cancelling_cycle")
    assert await cycles_in_db(database_url) == [("manual", "cancelled")]


async def test_second_sigint_cancels_at_once(start_engine, services, database_url):
    services.llm_delay = 120.0
    engine = await start_engine(grace=60)
    await engine.wait_for(is_event("engine.ready"), "engine.ready")
    engine.signal(signal.SIGUSR1)
    await asyncio.wait_for(services.llm_arrived.wait(), 30)
    engine.signal(signal.SIGINT)
    await engine.wait_for(is_event("engine.waiting_for_cycle"), "waiting for the cycle")
    engine.signal(signal.SIGINT)
    assert await engine.exit_code(timeout=20) == 0
    assert engine.events("engine.interrupted")
    assert await cycles_in_db(database_url) == [("manual", "cancelled")]


async def test_once_runs_one_cycle_and_exits_0(start_engine, services, database_url):
    engine = await start_engine("--once")
    assert await engine.exit_code(timeout=60) == 0
    (done,) = engine.events("cycle.finished")
    assert done["status"] == "ok"
    assert await cycles_in_db(database_url) == [("manual", "ok")]


async def test_dry_run_decides_but_persists_nothing(start_engine, services, database_url):
    engine = await start_engine("--once", "--dry-run")
    assert await engine.exit_code(timeout=60) == 0
    (done,) = engine.events("cycle.finished")
    assert done["status"] == "ok" and done["valid"] == 1 and done["fills"] == 0
    assert engine.events("cycle.dry_run")
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetchval(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert tables == 0  # not even migrated: nothing persisted


async def test_symbol_filters_come_from_exchange_info_when_asked(start_engine, services):
    engine = await start_engine("--once", "--dry-run", extra="[broker]\nuse_exchange_info = true")
    assert await engine.exit_code(timeout=60) == 0
    (loaded,) = engine.events("broker.exchange_info_loaded")
    assert loaded["symbols"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
