"""The live page in a real headless chromium: it draws the equity curves and the leaderboard, and
updates both from the event stream without a reload.

Runs Debian's /usr/bin/chromium through playwright's Python driver (never `playwright install`),
against a hand-written target. tests/test_page_engine.py does the same against a real engine
replaying the sample market, and refreshes the README's screenshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.bus import Bus
from engine.settings import ControlSettings
from engine.web.control import ControlServer, event_payload
from tests.support.control import (
    STEP,
    TRADERS,
    FakeTarget,
    decision,
    leaderboard,
    sample_position,
    snapshot,
)
from tests.support.page import launched_chromium, open_page, requires_chromium

pytestmark = [pytest.mark.browser, requires_chromium]


async def _serve(target: FakeTarget, bus: Bus) -> tuple[ControlServer, asyncio.Task[None]]:
    server = ControlServer(ControlSettings(port=0), target, bus, None)
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.started.wait(), 10)
    return server, task


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launched_chromium() as chromium:
        yield chromium


async def test_page_draws_the_curves_and_updates_chart_and_leaderboard_without_reload(
    bus: Bus, browser: Any, tmp_path: Path
) -> None:
    target = FakeTarget(points=96)
    earlier = target.last_ts()
    for name, action, symbol, reason in (
        ("gpt-4o", "open_short", "BTCUSDT", "Lower highs on 15m and RSI 68 rolling over"),
        ("deepseek", "hold", "", "No edge: BTC is mid-range, waiting for a break of 98k"),
        ("momentum", "open_long", "SOLUSDT", "EMA20 crossed above EMA50 on 15m"),
    ):
        target.decisions[name].append(event_payload(decision(name, reason, earlier, action, symbol,
                                                             model=name)))
    server, task = await _serve(target, bus)
    errors: list[str] = []
    try:
        page = await open_page(browser, f"http://127.0.0.1:{server.port}/", errors)
        initial = len(TRADERS) * 96
        await page.wait_for_function(
            f"Number(document.getElementById('equity-chart').dataset.points) === {initial}")
        assert await page.locator("#equity-chart canvas").count() == 1
        assert await page.locator("#legend .legend-item").count() == len(TRADERS)
        rows = target.leaderboard()["rows"]
        leader_before = await page.locator("#leaderboard tbody tr").first.get_attribute(
            "data-trader")
        assert leader_before == rows[0]["trader"]
        assert await page.locator("#positions tbody tr").count() == len(TRADERS)
        await page.evaluate("window.__sameDocument = 'yes'")
        pixels_before = await page.evaluate(
            "document.querySelector('#equity-chart canvas').toDataURL()")

        # One cycle later: every trader gets a new equity point, the runner-up takes the lead,
        # positions change, and claude explains its new trade.
        ts = target.last_ts() + STEP
        challenger = rows[1]["trader"]
        held = {"claude": (sample_position("claude", "ETHUSDT"),),
                "gpt-4o": (sample_position("gpt-4o", "BTCUSDT", "short"),),
                "momentum": (sample_position("momentum", "SOLUSDT"),
                             sample_position("momentum", "BTCUSDT"))}
        for name in TRADERS:
            last = target.history[name][-1][1]
            equity = rows[0]["equity"] + 120.0 if name == challenger else last - 15.0
            target.history[name].append((ts, equity))
            bus.publish(snapshot(name, equity, ts, held.get(name, ())))
        bus.publish(leaderboard(target.history, ts))
        bus.publish(decision("claude", "ETH reclaimed the 4h EMA50 with rising volume", ts))

        await page.wait_for_function(
            "Number(document.getElementById('equity-chart').dataset.points) === "
            f"{initial + len(TRADERS)}")
        await page.wait_for_function(
            f"document.querySelector('#leaderboard tbody tr').dataset.trader === '{challenger}'")
        await page.locator("#decisions", has_text="reclaimed the 4h EMA50").wait_for()
        await page.wait_for_function(
            "document.querySelectorAll('#positions tbody tr').length === 4")
        last = await page.evaluate(f"window.arena.series.get('{challenger}').eq.at(-1)")
        decisions = await page.locator("#decisions .why").all_inner_texts()
        pixels_after = await page.evaluate(
            "document.querySelector('#equity-chart canvas').toDataURL()")
        top_legend = await page.locator("#legend .legend-item").first.get_attribute(
            "data-trader")
        same_document = await page.evaluate("window.__sameDocument")
        shot = tmp_path / "page.png"
        await page.screenshot(path=str(shot), full_page=True)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert last == rows[0]["equity"] + 120.0
    assert pixels_after != pixels_before
    assert top_legend == challenger
    assert decisions[0] == "ETH reclaimed the 4h EMA50 with rising volume"
    assert len(decisions) == 4
    assert same_document == "yes"  # updated in place, never reloaded
    assert shot.stat().st_size > 10_000
    assert errors == []


async def test_page_shows_paused_state_and_stale_prices(bus: Bus, browser: Any) -> None:
    target = FakeTarget(points=4)
    target.paused = True
    server, task = await _serve(target, bus)
    errors: list[str] = []
    try:
        page = await open_page(browser, f"http://127.0.0.1:{server.port}/", errors)
        await page.locator("#paused-badge").wait_for(state="visible")
        await page.locator(".price-chip[data-symbol='SOLUSDT']").wait_for()
        stale = await page.locator(".price-chip.stale").evaluate_all(
            "els => els.map(e => e.dataset.symbol)")
        fresh = await page.locator(".price-chip.fresh").evaluate_all(
            "els => els.map(e => e.dataset.symbol)")
        feed = await page.locator("#feed-badge").inner_text()
        positions = await page.locator("#positions tbody tr").count()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sorted(stale) == ["DOGEUSDT", "SOLUSDT"]
    assert sorted(fresh) == ["BTCUSDT", "ETHUSDT"]
    assert feed == "feed: 2 stale"
    assert positions == len(TRADERS)
    assert errors == []
