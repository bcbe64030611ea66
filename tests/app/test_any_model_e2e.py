"""Issue 23's arena, live: any model beside the native three, ranked honestly.

A real `python run.py` (the live engine, wall clock) against the fake Binance on 127.0.0.1
(`engine.market.fakebinance`, prices kept fresh) and one local LLM server
(`tests.support.llm_server.LLMServer`) that is every provider at once: Anthropic's messages API,
OpenAI's and DeepSeek's chat completions, and two more OpenAI-compatible endpoints declared in
settings as `[llm.providers.NAME]` with `kind = "openai_compatible"`: `qwen`, which refuses
`response_format: json_schema` (as many vLLM and Ollama builds do) and takes tool calls, and
`kimi`, which takes json_schema. Beside the five LLM traders run the baselines (buy_and_hold,
ema_cross) and the null: a trader of strategy `random`, named `coin` here so that nothing can key
on the name. Cycles are started through the control API (`POST /trigger`, which answers when the
cycle is done); nothing runs on schedule.

Then every trader has a valid decision row of its own in Postgres for every cycle, each LLM
decision names the model version its endpoint answered with, qwen's client learned its mode from
the refusal, and `/leaderboard` ranks honestly (1 + the traders that beat it with P >= beats_p,
from the pairwise probabilities the same answer carries), shows full coverage and P(trader beats
the random-strategy trader), as the run report written on exit does.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.market.fakebinance import FakeBinance
from tests.app.test_engine_process import PRICES
from tests.support.feed import fresh_prices
from tests.support.llm_server import COMPATIBLE_VERSION, LLMServer
from tests.support.process import Engine, is_event
from tests.support.store import fetch

ROOT = Path(__file__).resolve().parents[2]
CYCLES = 4
KEYS = {"ANTHROPIC_API_KEY": "sk-ant-local", "OPENAI_API_KEY": "sk-openai-local",
        "DEEPSEEK_API_KEY": "sk-deepseek-local", "QWEN_API_KEY": "sk-qwen-local",
        "KIMI_API_KEY": "sk-kimi-local"}
# trader → (provider, model): the native three as in settings.toml, then two declared providers
LLM_TRADERS = {"claude": ("anthropic", "claude-sonnet-4-6"),
               "deepseek": ("deepseek", "deepseek-chat"), "gpt-4o": ("openai", "gpt-4o"),
               "qwen": ("qwen", "qwen3-max"), "kimi": ("kimi", "kimi-k2")}
BASELINES = ("buy_and_hold", "ema_cross")
NULL = "coin"  # strategy "random"
TRADERS = (*LLM_TRADERS, *BASELINES, NULL)

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
[llm.providers.anthropic]
base_url = "{http}"
max_retries = 0
[llm.providers.openai]
base_url = "{http}/v1"
max_retries = 0
[llm.providers.deepseek]
kind = "openai_compatible"
base_url = "{http}"
api_key_env = "DEEPSEEK_API_KEY"
max_retries = 0
structured_output = "json_object"
[llm.providers.qwen]
kind = "openai_compatible"
base_url = "{http}/qwen/v1"
api_key_env = "QWEN_API_KEY"
max_retries = 0
[llm.providers.kimi]
kind = "openai_compatible"
base_url = "{http}/kimi/v1"
api_key_env = "KIMI_API_KEY"
max_retries = 0
[llm.prices."qwen3-max"]
input = 1.2
output = 6.0
[llm.prices."kimi-k2"]
input = 0.6
output = 2.5
training_cutoff = "unknown"
[leaderboard]
min_returns = 2
[database]
spill_path = "{tmp}/spill.jsonl"
flush_ms = 50
[control]
port = 0
{traders}
[[traders]]
name = "buy_and_hold"
strategy = "buy_and_hold"
starting_capital = 10000
params = {{ symbol_weights = {{ BTCUSDT = 0.5, ETHUSDT = 0.3, SOLUSDT = 0.2 }}, leverage = 1 }}
[[traders]]
name = "ema_cross"
strategy = "ema_cross"
starting_capital = 10000
params = {{ fast = 20, slow = 50, size_pct = 20, leverage = 3, timeframe = "1m" }}
[[traders]]
name = "{null}"
strategy = "random"
starting_capital = 10000
params = {{ seed = 7, mix = {{ open_long = 0.3, open_short = 0.3, close = 0.2, hold = 0.2 }} }}
[[jobs]]
name = "trading_cycle"
run = "trading_cycle"
schedule = "daily"
daily_time = "{daily}"
timeout_seconds = 60
"""


def write_settings(tmp: Path, binance: FakeBinance, llm: LLMServer) -> Path:
    traders = "".join(f'[[traders]]\nname = "{name}"\nstrategy = "llm"\nprovider = "{p}"\n'
                      f'model = "{m}"\nstarting_capital = 10000\n'
                      for name, (p, m) in LLM_TRADERS.items())
    path = tmp / "settings.toml"
    path.write_text(SETTINGS.format(
        ws=binance.ws_url, rest=binance.rest_url, http=llm.url, tmp=tmp, traders=traders,
        null=NULL, daily=time.strftime("%H:%M", time.gmtime(time.time() + 12 * 3600))))
    return path


@pytest.fixture
async def arena(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Engine, LLMServer]]:
    async with (FakeBinance(symbols=PRICES, candles=None) as binance,
                LLMServer(delay=0.0, compatible={"qwen": ("json_schema",), "kimi": ()}) as llm,
                fresh_prices(binance, PRICES)):
        settings = write_settings(tmp_path, binance, llm)
        env = {k: v for k, v in os.environ.items() if k != "ARENA_CONTROL_TOKEN"}
        env.update({**KEYS, "DATABASE_URL": database_url})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "run.py"), "--config", str(settings), "--log-format",
            "json", cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        engine = Engine(proc)
        try:
            yield engine, llm
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def call(session: aiohttp.ClientSession, method: str, url: str) -> dict[str, Any]:
    # a POST carries Content-Type: application/json
    json: dict[str, Any] | None = {} if method == "POST" else None
    async with session.request(method, url, json=json,
                               timeout=aiohttp.ClientTimeout(total=60)) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body


async def test_any_model_arena_decides_live_and_ranks_honestly(arena, database_url: str,
                                                              tmp_path: Path) -> None:
    engine, llm = arena
    started = await engine.wait_for(is_event("control.started"), "control.started")
    await engine.wait_for(is_event("engine.ready"), "engine.ready")
    base = f"http://127.0.0.1:{started['port']}"
    async with aiohttp.ClientSession() as http:
        summaries = [(await call(http, "POST", base + "/trigger"))["summary"]
                     for _ in range(CYCLES)]
        board = await call(http, "GET", base + "/leaderboard")
        traders = await call(http, "GET", base + "/traders")
    engine.signal(2)  # SIGINT: an orderly stop
    assert await engine.exit_code(timeout=30) == 0, engine.tail()

    assert [s["status"] for s in summaries] == ["ok"] * CYCLES, summaries
    assert {t["name"]: t["strategy"] for t in traders["traders"]}[NULL] == "random"

    # Every trader decided validly on every cycle, each decision a row of its own.
    rows = await fetch(database_url, "SELECT cycle_id, trader, provider, model, model_version, "
                       "valid, error FROM decisions")
    cycles = {s["cycle_id"] for s in summaries}
    assert {(r["cycle_id"], r["trader"]) for r in rows if r["valid"]} == {
        (c, t) for c in cycles for t in TRADERS}, [r for r in rows if not r["valid"]]
    for r in rows:
        if r["trader"] in LLM_TRADERS:
            assert (r["provider"], r["model"]) == LLM_TRADERS[r["trader"]]
    versions = {r["trader"]: r["model_version"] for r in rows}
    assert versions["qwen"] == "qwen3-max" + COMPATIBLE_VERSION
    assert versions["kimi"] == "kimi-k2" + COMPATIBLE_VERSION
    assert versions["gpt-4o"] == "gpt-4o-2024-08-06"  # the recorded answer's snapshot
    # qwen was refused json_schema once, learned the tool call and kept it; kimi never stepped
    assert llm.modes["qwen"] == ["json_schema"] + ["tool"] * CYCLES
    assert llm.modes["kimi"] == ["json_schema"] * CYCLES
    (learned,) = engine.events("llm.output_mode_learned")
    assert (learned["refused"], learned["mode"]) == ("json_schema", "tool")
    assert {p for p, _ in llm.requests} == {"anthropic", "openai", "deepseek", "qwen", "kimi"}

    # /leaderboard: every trader, full coverage, honest ranks, P(beats the random trader)
    by_trader = {r["trader"]: r for r in board["rows"]}
    assert sorted(by_trader) == sorted(TRADERS)
    assert all(r["coverage"] == 1.0 for r in board["rows"]), board["rows"]
    probs: dict[tuple[str, str], float] = {}
    for p in board["pairwise"]:
        if p["p_a_beats_b"] is not None:
            probs[(p["a"], p["b"])] = p["p_a_beats_b"]
            probs[(p["b"], p["a"])] = 1 - p["p_a_beats_b"]
    assert probs, "P(A beats B) is shown from min_returns = 2 on"
    beats_p = board["stats"]["beats_p"]
    for t, r in by_trader.items():
        assert r["rank"] == 1 + sum(1 for u in TRADERS
                                    if u != t and probs.get((u, t), 0.0) >= beats_p - 1e-9), t
        if t == NULL:
            assert r["p_beats_random"] is None
        else:
            assert r["p_beats_random"] == pytest.approx(probs[(t, NULL)], abs=1e-4), t
    assert min(r["rank"] for r in board["rows"]) == 1

    # The report written on exit compares with the same null, and ranks every trader too.
    (report,) = (tmp_path / "data" / "reports").glob("*.json")
    stats = {t["trader"]: t["stats"] for t in json.loads(report.read_text())["traders"]}
    assert sorted(stats) == sorted(TRADERS)
    assert stats[NULL]["p_beats_random"] is None
    assert all(isinstance(stats[t]["p_beats_random"], float) for t in TRADERS if t != NULL)
    assert all(isinstance(s["rank"], int) for s in stats.values())
    # the market and the traders moved the accounts: returns to compare, not a flat board
    assert any(r["trades"] > 0 for r in board["rows"])
