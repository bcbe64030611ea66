"""Whole-session record and replay: a live run against a local Binance websocket and a local LLM
server, recorded with `--record`, then replayed twice with no keys and no network.

The live engine runs in this process on the wall clock (a cycle every second); the fake market
sends its frames half-way between two cycles and the LLM server answers in 50 ms, so what a
cycle sees never depends on a race at a second's edge. Each replay gets its own database.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from engine.app.engine import Engine, Options
from engine.events import CycleFinished
from engine.market.fakebinance import FakeBinance
from engine.market.recording import read_session
from engine.settings import Secrets, Settings
from tests.support.feed import book_ticker, mark_price, ticker
from tests.support.llm_server import LLMServer

CYCLES = 4
PRICES = {"BTCUSDT": 100.0, "ETHUSDT": 20.0, "SOLUSDT": 5.0}
TRADERS = [
    {"name": "claude", "strategy": "llm", "provider": "anthropic", "model": "claude-sonnet-4-6"},
    {"name": "gpt", "strategy": "llm", "provider": "openai", "model": "gpt-4o"},
    {"name": "ds", "strategy": "llm", "provider": "deepseek", "model": "deepseek-chat"},
    {"name": "bh", "strategy": "buy_and_hold",
     "params": {"symbol_weights": {"BTCUSDT": 0.5, "ETHUSDT": 0.5}}},
]
DECISION_COLUMNS = ("cycle_id, trader, provider, model, prompt_hash, raw_answer, decision::text,"
                    " valid, error, input_tokens, output_tokens, cache_read_tokens,"
                    " cache_write_tokens, cost_usd, latency_ms, request_id, ts")
FILL_COLUMNS = ("trader, symbol, side, qty, price, notional, fee, realized_pnl, reason, cycle_id,"
                " ref_price, ts")
SNAPSHOT_COLUMNS = ("trader, cash, margin, unrealized_pnl, equity, realized_pnl, fees, funding,"
                    " peak_equity, drawdown_pct, return_pct, positions::text, state::text, cause,"
                    " cycle_id, ts")
KEYS = {"anthropic_api_key": "sk-ant-dummy", "openai_api_key": "sk-dummy",
        "deepseek_api_key": "sk-ds-dummy"}


def settings(tmp: Path, ws_url: str, rest_url: str, llm_url: str) -> Settings:
    return Settings.model_validate({
        "engine": {"shutdown_grace_seconds": 5},
        "feed": {"symbols": list(PRICES), "futures_ws_url": ws_url,
                 "futures_rest_url": rest_url,
                 "backfill_candles": 0, "backfill_higher_candles": 0},
        "llm": {"providers": {"anthropic": {"base_url": llm_url, "max_retries": 0},
                              "openai": {"base_url": llm_url + "/v1", "max_retries": 0},
                              "deepseek": {"base_url": llm_url, "max_retries": 0}},
                "prices": {"claude-sonnet-4-6": {"input": 3.0, "output": 15.0},
                           "gpt-4o": {"input": 2.5, "output": 10.0},
                           "deepseek-chat": {"input": 0.27, "output": 1.1}}},
        "traders": TRADERS,
        "database": {"spill_path": str(tmp / "spill.jsonl"), "embedded_dir": str(tmp / "pg"),
                     "flush_ms": 20},
        "control": {"enabled": False},
        "report": {"on_exit": False},
        "jobs": [{"name": "trading_cycle", "run": "trading_cycle", "schedule": "interval",
                  "interval_seconds": 1, "timeout_seconds": 5}],
    })


async def new_database(server_url: str, admin_dbs: list[str]) -> str:
    from urllib.parse import urlsplit, urlunsplit

    name = f"arena_session_{len(admin_dbs)}_{int(time.time() * 1000) % 10**8}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    admin_dbs.append(name)
    return urlunsplit(urlsplit(server_url)._replace(path="/" + name))


async def run_engine(s: Settings, secrets: Secrets, options: Options, *,
                     until_cycles: int | None = None) -> Engine:
    engine = Engine(s, secrets, options)
    cycles = engine.bus.subscribe("test.cycles", [CycleFinished], capacity=100)

    async def stop_after() -> None:
        seen = 0
        async for _ in cycles:
            seen += 1
            if until_cycles is not None and seen >= until_cycles:
                engine.request_stop("test: enough cycles")

    watcher = asyncio.create_task(stop_after())
    try:
        assert await asyncio.wait_for(engine.run(), 60) == 0
    finally:
        watcher.cancel()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return engine


async def market(fake: FakeBinance, stop: asyncio.Event) -> None:
    """Send a burst of frames at every half second of the wall clock (x.5), prices drifting."""
    step = 0
    while not stop.is_set():
        now = time.time()
        await asyncio.sleep((int(now) + 1.5 - now) % 1.0 or 1.0)  # pacing a fake server
        e_ms = int(time.time() * 1000)
        step += 1
        for i, (symbol, base) in enumerate(PRICES.items()):
            p = round(base * (1 + 0.001 * ((step * (i + 2)) % 7 - 3)), 4)
            tick = round(base * 0.0001, 6)
            fake.outbox.put_nowait(book_ticker(symbol, p - tick, p + tick, e_ms, u=step))
            fake.outbox.put_nowait(mark_price(symbol, p, e_ms, next_funding_ms=e_ms + 8 * 3600_000))
            fake.outbox.put_nowait(ticker(symbol, p, e_ms))


async def table(dsn: str, columns: str, name: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"SELECT {columns} FROM {name} ORDER BY ts, trader, id")
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


async def final_equity(dsn: str) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT DISTINCT ON (trader) trader, equity FROM account_snapshots"
                                " ORDER BY trader, ts DESC, id DESC")
    finally:
        await conn.close()
    return {r["trader"]: r["equity"] for r in rows}


@pytest.fixture
async def databases(pg_server_url: str):
    names: list[str] = []

    async def make() -> str:
        return await new_database(pg_server_url, names)

    yield make
    admin = await asyncpg.connect(pg_server_url)
    try:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_a_recorded_session_replays_bit_for_bit_without_keys_or_network(tmp_path, databases):
    recording = tmp_path / "session.jsonl.gz"
    async with FakeBinance(candles=None) as fake, LLMServer(delay=0.05) as llm:
        s = settings(tmp_path, fake.ws_url, fake.rest_url, llm.url)
        stop = asyncio.Event()
        pacing = asyncio.create_task(market(fake, stop))
        live_db = await databases()
        try:
            await run_engine(s, Secrets(**KEYS, database_url=live_db, control_token=None),
                             Options(record=str(recording), fresh=True), until_cycles=CYCLES)
        finally:
            stop.set()
            pacing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pacing
        asked = len(llm.requests)
    assert asked >= 3 * CYCLES

    # The recording: one llm line per call, keyed and free of account headers and keys.
    records, cycles = read_session(recording)
    assert len(records) == asked and len(cycles) >= CYCLES
    for r in records:
        assert {"trader", "provider", "model", "params", "prompt_hash", "latency_ms", "request",
                "response"} <= set(r)
        assert r["response"]["status"] == 200 and r["latency_ms"] >= 50
        assert not {"set-cookie", "anthropic-organization-id", "openai-organization"} & set(
            r["response"]["headers"])
    import gzip
    text = gzip.decompress(recording.read_bytes()).decode()
    assert "sk-ant-dummy" not in text and "__cf_bm" not in text and "org-local-test" not in text

    # Replays: no keys, every LLM endpoint a closed port, the local servers gone.
    dead = settings(tmp_path, "ws://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9")
    replays = []
    for _ in range(2):
        dsn = await databases()
        engine = await run_engine(
            dead, Secrets(None, None, None, database_url=dsn, control_token=None),
            Options(replay=str(recording), fresh=True))
        assert sorted(engine.strategies) == ["bh", "claude", "ds", "gpt"]
        assert engine.llm_session.counts == {"live": 0, "replay": asked, "cache": 0,
                                             "not_recorded": 0}
        replays.append(dsn)

    live_decisions = await table(live_db, DECISION_COLUMNS, "decisions")
    first, second = [await table(dsn, DECISION_COLUMNS, "decisions") for dsn in replays]
    for a, b in zip(first, second, strict=True):
        assert a == b, [(i, x, y) for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    assert first == second  # row for row, every column but the id
    fills = [await table(dsn, FILL_COLUMNS, "fills") for dsn in replays]
    assert fills[0] == fills[1] and len(fills[0]) >= 3
    assert await final_equity(replays[0]) == await final_equity(replays[1])
    equity = [await table(dsn, SNAPSHOT_COLUMNS, "account_snapshots") for dsn in replays]
    assert equity[0] == equity[1]  # every equity point, so every leaderboard, bit for bit

    # The same prompts (hashes) got the same answers, with their recorded latencies.
    def calls(rows: list[tuple]) -> list[tuple]:
        return sorted((r[0], r[1], r[4], r[5], r[14], r[15]) for r in rows if r[2] != "rule")

    assert calls(first) == calls(live_decisions)
    assert {r[14] for r in first if r[2] != "rule"} == {r["latency_ms"] for r in records}


async def test_a_changed_prompt_holds_not_recorded_or_asks_once_with_live_llm(tmp_path,
                                                                              databases):
    """A trader whose prompt the recording does not hold (here: another max_tokens) holds with
    `not_recorded`; with --live-llm and keys it asks the API, and a re-run asks nothing: the
    answer cache (on by default in replays) answers, and says what it saved."""
    recording = tmp_path / "s.jsonl"
    async with FakeBinance(candles=None) as fake, LLMServer(delay=0.01) as llm:
        s = settings(tmp_path, fake.ws_url, fake.rest_url, llm.url)
        stop = asyncio.Event()
        pacing = asyncio.create_task(market(fake, stop))
        try:
            await run_engine(s, Secrets(**KEYS, database_url=await databases(),
                                        control_token=None),
                             Options(record=str(recording), fresh=True), until_cycles=2)
        finally:
            stop.set()
            pacing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pacing
        changed = s.model_copy(update={"traders": tuple(
            t if t.name != "gpt" else t.model_copy(update={"max_tokens": 999})
            for t in s.traders)})

        dsn = await databases()
        before = len(llm.requests)
        engine = await run_engine(changed, Secrets(None, None, None, database_url=dsn,
                                                   control_token=None),
                                  Options(replay=str(recording), fresh=True))
        assert len(llm.requests) == before  # no keys, no --live-llm: nothing asked
        missed = engine.llm_session.counts["not_recorded"]
        assert missed >= 2
        rows = await table(dsn, "trader, valid, error", "decisions")
        gpt = [r for r in rows if r[0] == "gpt"]
        assert gpt and all(not r[1] and r[2].startswith("not_recorded: ") for r in gpt)
        assert all(r[1] for r in rows if r[0] == "claude"), rows

        # --live-llm with keys: the changed prompts go to the API once, then come from the cache.
        cached_db = await databases()
        runs = []
        for _ in range(2):
            engine = await run_engine(changed, Secrets(**KEYS, database_url=cached_db,
                                                       control_token=None),
                                      Options(replay=str(recording), fresh=True, live_llm=True))
            runs.append((engine.llm_session.counts, engine.llm_session.saved_usd,
                         len(llm.requests) - before))
    (first, saved1, asked1), (second, saved2, asked2) = runs
    assert first["live"] == missed and asked1 == missed and saved1 == 0
    assert second["live"] == 0 and second["cache"] == missed and asked2 == asked1
    assert saved2 > 0 and first["replay"] == second["replay"] > 0
    conn = await asyncpg.connect(cached_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM llm_cache_hits") == missed
    finally:
        await conn.close()
    lines = [orjson.loads(line) for line in recording.read_bytes().splitlines()]
    assert any("cycle" in x for x in lines) and any("llm" in x for x in lines)
