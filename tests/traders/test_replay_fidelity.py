"""A replay reproduces the live session it recorded: every prompt, decision and fill.

Live runs against a fast local market (a frame every 0.2 s per stream, prices swinging through
the traders' tight stops and take-profits) and a local LLM server answering in 50 ms; cycles
scheduled every second, one `--once` cycle, or two `/trigger` calls. Each recording is then
replayed twice with no keys and no network: the cycles start at their recorded instants (not on
a second boundary), each trader's orders fill against the book as it was at the recorded instant
of the live fill, and every LLM call finds its recorded answer (0 not_recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest
import structlog
import structlog.testing

from engine.app.engine import Engine, Options
from engine.market.fakebinance import FakeBinance
from engine.market.recording import read_timing
from engine.settings import Secrets, Settings
from tests.support.feed import book_ticker, mark_price, ticker
from tests.support.llm_server import LLMServer
from tests.traders.test_session_replay import KEYS, TRADERS, new_database, run_engine, table

PRICES = {"BTCUSDT": 100.0, "ETHUSDT": 20.0, "SOLUSDT": 5.0}
# Tight brackets (0.3 %) around the base prices; the market swings 0.6 % either way.
BRACKETS: dict[str, tuple[float | None, float | None]] = {
    "BTCUSDT": (99.7, 100.3), "ETHUSDT": (20.06, 19.94), "SOLUSDT": (4.985, 5.015)}
FRAME_EVERY_S = 0.2
DECISIONS = ("cycle_id, trader, prompt_hash, raw_answer, decision::text, valid, error,"
             " latency_ms, request_id")
FILLS = ("trader, symbol, side, qty, price, notional, fee, realized_pnl, reason, cycle_id,"
         " ref_price")
CYCLES = "cycle_id, trigger, started_at, status, skip_reason, snapshot::text"


def settings(tmp: Path, ws_url: str, rest_url: str, llm_url: str, *, scheduled: bool,
             control: bool = False) -> Settings:
    return Settings.model_validate({
        "engine": {"shutdown_grace_seconds": 5},
        "feed": {"symbols": list(PRICES), "futures_ws_url": ws_url, "futures_rest_url": rest_url,
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
        "control": {"enabled": control, "host": "127.0.0.1", "port": 0},
        "report": {"on_exit": False},
        "jobs": [{"name": "trading_cycle", "run": "trading_cycle", "schedule": "interval",
                  "interval_seconds": 1, "timeout_seconds": 5, "enabled": scheduled}],
    })


async def fast_market(fake: FakeBinance, stop: asyncio.Event) -> None:
    """Send every stream of every symbol every 0.2 s, prices swinging 0.6 % around the base."""
    step = 0
    while not stop.is_set():
        await asyncio.sleep(FRAME_EVERY_S)  # pacing a fake server
        step += 1
        e_ms = int(time.time() * 1000)
        for i, (symbol, base) in enumerate(PRICES.items()):
            p = round(base * (1 + 0.006 * math.sin(step * 0.9 + i * 2.1)), 4)
            tick = round(base * 0.0001, 6)
            fake.send(book_ticker(symbol, p - tick, p + tick, e_ms, u=step),
                      mark_price(symbol, p, e_ms, next_funding_ms=e_ms + 8 * 3600_000),
                      ticker(symbol, p, e_ms))


@pytest.fixture
async def databases(pg_server_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
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


async def record_live(tmp: Path, databases: Callable[[], Awaitable[str]], how: str
                      ) -> tuple[Path, str, int]:
    """Run one live session (`how`: scheduled, once or trigger); return file, database, calls."""
    recording = tmp / f"{how}.jsonl.gz"
    async with FakeBinance(candles=None) as fake, \
            LLMServer(delay=0.05, brackets=BRACKETS) as llm:
        s = settings(tmp, fake.ws_url, fake.rest_url, llm.url, scheduled=how == "scheduled",
                     control=how == "trigger")
        stop = asyncio.Event()
        pacing = asyncio.create_task(fast_market(fake, stop))
        dsn = await databases()
        secrets = Secrets(**KEYS, database_url=dsn, control_token=None)
        try:
            if how == "scheduled":
                await run_engine(s, secrets, Options(record=str(recording), fresh=True),
                                 until_cycles=5)
            elif how == "once":
                await run_engine(s, secrets, Options(record=str(recording), fresh=True,
                                                     once=True))
            else:
                await _two_triggers(s, secrets, recording)
        finally:
            stop.set()
            pacing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pacing
        return recording, dsn, len(llm.requests)


async def _two_triggers(s: Settings, secrets: Secrets, recording: Path) -> None:
    engine = Engine(s, secrets, Options(record=str(recording), fresh=True))
    run = asyncio.create_task(engine.run())
    try:
        for _ in range(500):  # the control server is up and the engine ready
            if engine.state == "running" and getattr(engine, "control", None) is not None \
                    and engine.control.port:
                break
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{engine.control.port}/trigger"
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.post(url, json={}) as resp:
                    body = await resp.json()
                    assert resp.status == 200 and body["triggered"], body
                await asyncio.sleep(0.7)  # the market moves (and stops trigger) in between
        engine.request_stop("test: two triggers done")
        assert await asyncio.wait_for(run, 60) == 0
    finally:
        if not run.done():
            run.cancel()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def replay_twice(s: Settings, recording: Path, databases: Callable[[], Awaitable[str]],
                       asked: int) -> list[str]:
    out = []
    for _ in range(2):
        dsn = await databases()
        with structlog.testing.capture_logs() as logs:
            engine = await run_engine(s, Secrets(None, None, None, database_url=dsn,
                                                 control_token=None),
                                      Options(replay=str(recording), fresh=True))
        assert engine.llm_session is not None
        assert engine.llm_session.counts == {"live": 0, "replay": asked, "cache": 0,
                                             "not_recorded": 0}
        (summary,) = [e for e in logs if e["event"] == "llm.session_summary"]
        assert (summary["replay"], summary["not_recorded"]) == (asked, 0)
        out.append(dsn)
    return out


async def ordered(dsn: str, columns: str, name: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"SELECT {columns}, ts FROM {name} ORDER BY ts, trader, id")
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


async def cycles(dsn: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"SELECT {CYCLES} FROM cycles ORDER BY started_at, id")
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


async def check_replays_match_live(live: str, replays: list[str]) -> list[tuple[Any, ...]]:
    """Assert every prompt, decision, cycle and fill of the live run came back; return fills."""
    live_cycles = await cycles(live)
    live_decisions = sorted(r[:-1] for r in await ordered(live, DECISIONS, "decisions"))
    live_fills = await ordered(live, FILLS, "fills")
    for dsn in replays:
        assert await cycles(dsn) == live_cycles  # ids, triggers, start instants, snapshots
        assert sorted(r[:-1] for r in await ordered(dsn, DECISIONS, "decisions")) \
            == live_decisions  # the same prompts (hashes) got the same answers and decisions
        fills = await ordered(dsn, FILLS, "fills")
        assert [r[:-1] for r in fills] == [r[:-1] for r in live_fills]
        # A cycle's fills happen at the live fill's instant; a trigger's at its frame's.
        assert [r[-1] for r in fills if r[9] is not None] == \
            [r[-1] for r in live_fills if r[9] is not None]
    first, second = replays
    assert await table(first, "trader, symbol, side, qty, price, reason, cycle_id, ts",
                       "fills") == await table(second, "trader, symbol, side, qty, price, "
                                               "reason, cycle_id, ts", "fills")
    return live_fills


async def test_a_scheduled_session_with_tight_stops_replays_to_the_live_run(
        tmp_path: Path, databases: Callable[[], Awaitable[str]]) -> None:
    recording, live, asked = await record_live(tmp_path, databases, "scheduled")
    timing = read_timing(recording)
    assert len(timing.cycles) >= 5 and {c[2] for c in timing.cycles} == {"schedule"}
    assert any(point.startswith("fill:") for _, point in timing.pace)
    dead = settings(tmp_path, "ws://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9",
                    scheduled=True)
    fills = await check_replays_match_live(live, await replay_twice(dead, recording, databases,
                                                                    asked))
    reasons = {r[8] for r in fills}
    assert "decision" in reasons and reasons & {"stop_loss", "take_profit"}, reasons


async def test_a_once_session_replays_to_the_live_run(
        tmp_path: Path, databases: Callable[[], Awaitable[str]]) -> None:
    recording, live, asked = await record_live(tmp_path, databases, "once")
    timing = read_timing(recording)
    assert [c[2] for c in timing.cycles] == ["manual"] and asked == 3
    dead = settings(tmp_path, "ws://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9",
                    scheduled=True)
    fills = await check_replays_match_live(live, await replay_twice(dead, recording, databases,
                                                                    asked))
    assert any(r[8] == "decision" for r in fills)


async def test_a_session_with_two_trigger_calls_replays_to_the_live_run(
        tmp_path: Path, databases: Callable[[], Awaitable[str]]) -> None:
    recording, live, asked = await record_live(tmp_path, databases, "trigger")
    timing = read_timing(recording)
    assert [c[2] for c in timing.cycles] == ["manual", "manual"] and asked == 6
    dead = settings(tmp_path, "ws://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9",
                    scheduled=True)
    fills = await check_replays_match_live(live, await replay_twice(dead, recording, databases,
                                                                    asked))
    assert any(r[8] == "decision" for r in fills)
