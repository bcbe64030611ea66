"""The per-trader view, trader statuses, symbol filters, gzip and the stream's heartbeat."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from engine.bus import Bus
from engine.events import DecisionRejected, PositionClosed
from engine.settings import ControlSettings
from engine.web.control import ControlServer
from tests.support.control import START, FakeTarget, decision


@pytest.fixture
async def served(bus: Bus) -> AsyncIterator[tuple[ControlServer, FakeTarget, str]]:
    target = FakeTarget()
    target.disabled = ("gemini",)
    server = ControlServer(ControlSettings(port=0), target, bus, None)
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.started.wait(), 10)
    try:
        yield server, target, f"http://127.0.0.1:{server.port}"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def get(url: str, **headers: str) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def test_traders_lists_every_configured_trader_with_its_status(served) -> None:
    _, _, base = served
    status, _, body = await get(f"{base}/traders")
    assert status == 200
    names = {t["name"]: (t["status"], t["detail"]) for t in body["traders"]}
    assert names["claude"] == ("active", None)
    assert names["gemini"] == ("disabled", "missing key")


async def test_a_configured_trader_without_a_key_says_disabled_not_unknown(served) -> None:
    _, _, base = served
    status, _, body = await get(f"{base}/traders/gemini")
    assert status == 200
    assert (body["status"], body["detail"], body["message"]) == (
        "disabled", "missing key", "disabled: missing key")
    assert body["positions"] == [] and body["account"] is None
    status, _, body = await get(f"{base}/traders/nobody")
    assert (status, body["error"]) == (404, "not_found")


async def test_the_trader_view_has_reasoning_refusals_and_completed_trades(served, bus) -> None:
    server, _, base = served
    bus.publish(decision("claude", "ETH reclaimed the 4h EMA50", START))
    bus.publish(DecisionRejected("c1", "claude", "BTCUSDT", "open_long", "max_leverage",
                                 "leverage 20 > 10", START + 1))
    bus.publish(PositionClosed("claude", "ETHUSDT", "long", 0.5, 3_350.0, 3_400.0, 25.0, 1.7,
                               "take_profit", START - 600, "c1", START + 2))
    bus.publish(decision("gpt-4o", "someone else", START))
    for _ in range(100):  # the journal consumes the bus in its own task: let it run
        if server.journal.view("claude")["trades"]:
            break
        await asyncio.sleep(0)
    _, _, body = await get(f"{base}/traders/claude")
    (why,) = body["reasoning"]
    assert why["actions"][0]["reason"] == "ETH reclaimed the 4h EMA50" and why["valid"] is True
    assert body["refusals"] == [{"ts": START + 1, "cycle_id": "c1", "symbol": "BTCUSDT",
                                 "action": "open_long", "rule": "max_leverage",
                                 "detail": "leverage 20 > 10"}]
    (trade,) = body["trades"]
    assert (trade["realized_pnl"], trade["reason"], trade["exit_price"]) == (
        25.0, "take_profit", 3_400.0)
    assert body["status"] == "active" and body["positions"]


async def test_symbols_give_tick_and_step_sizes(served) -> None:
    _, _, base = served
    _, _, body = await get(f"{base}/symbols")
    assert body["symbols"]["XRPUSDT"] == {"tick_size": 0.0001, "step_size": 0.1}


async def test_answers_are_gzipped_for_browsers_that_accept_it(served) -> None:
    _, _, base = served
    for path in ("/equity", "/static/app.js", "/"):
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(base + path, headers={"Accept-Encoding": "gzip"}) as resp:
                assert resp.status == 200
                assert resp.headers.get("Content-Encoding") == "gzip", path
            async with session.get(base + path, headers={"Accept-Encoding": "identity"}) as resp:
                assert "Content-Encoding" not in resp.headers, path


async def test_a_quiet_stream_sends_a_heartbeat_comment(served) -> None:
    server, _, base = served
    server.heartbeat_seconds = 0.05  # 15 s in production
    async with aiohttp.ClientSession() as session, session.get(f"{base}/events") as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        lines = []
        async with asyncio.timeout(10):
            while b": heartbeat\n" not in lines:
                lines.append(await resp.content.readline())
    assert lines[:2] == [b"retry: 2000\n", b": connected\n"]
    assert not any(line.startswith(b"data:") for line in lines)  # nothing but comments
