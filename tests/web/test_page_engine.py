"""The live page of a real engine, in a real headless chromium, while the engine replays a market.

A `python run.py --replay tests/data/sample.jsonl.gz --speed 250` process (1.5 h of recorded
market in about 22 s, rule-based traders only, a trading cycle every simulated minute, the test's
own Postgres database) serves its control API on a free port. Debian's /usr/bin/chromium opens
the page and, without reloading it, sees the equity chart gain points and the leaderboard change
as cycles happen; then a screenshot is saved and SIGTERM stops the engine with exit code 0.
Set ARENA_UPDATE_SCREENSHOT=1 to refresh the README's screenshot at tests/data/page.png from it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.live_engine import BUY_AND_HOLD, EMA_CROSS, start_replay, stop_if_running
from tests.support.page import (
    chart_points,
    launched_chromium,
    open_page,
    requires_chromium,
    save_screenshot,
    wait_for,
)
from tests.support.process import Engine, is_event

SPEED = "250"  # the sample's 1.5 h of market in ~22 s: a cycle every ~0.24 s of real time
CYCLES_FOR_PICTURE = 50  # of the sample's 90: the screenshot shows most of the race
TRADERS = ("buy_and_hold", "alts_2x", "ema_cross", "ema_cross_5x")
MORE_TRADERS = """
[[traders]]
name = "alts_2x"
strategy = "buy_and_hold"
starting_capital = 10000
params = { symbol_weights = { SOLUSDT = 0.2, XRPUSDT = 0.2, DOGEUSDT = 0.2 }, leverage = 2 }
[[traders]]
name = "ema_cross_5x"
strategy = "ema_cross"
starting_capital = 10000
[traders.params]
fast = 20
slow = 50
atr_stop = 1.0
atr_take = 2.0
size_pct = 40
leverage = 5
timeframe = "1m"
"""

pytestmark = [pytest.mark.browser, requires_chromium]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
async def engine(database_url: str, tmp_path: Path) -> AsyncIterator[Engine]:
    running = await start_replay(database_url, tmp_path, BUY_AND_HOLD + EMA_CROSS + MORE_TRADERS,
                                 "--speed", SPEED, "--log-format", "json", control=True)
    try:
        yield running
    finally:
        await stop_if_running(running)


async def _trade_in_view(page: Any) -> None:
    """Wait briefly (best effort) until a trade and its reason are in the decisions list's view.

    Only the last few cycles fit in that list, mostly holds; a moment with a trade reads better.
    """
    with contextlib.suppress(AssertionError):  # wait_for's timeout
        await wait_for(page,
            "Array.from(document.querySelectorAll('#decisions li')).slice(0, 10)"
            ".some(li => (li.querySelector('.why')?.textContent || '').length > 0)",
            timeout=4_000)


LEADERBOARD_TEXT = "document.querySelector('#leaderboard tbody').innerText"


async def test_page_of_a_replaying_engine_updates_chart_and_leaderboard_without_reload(
    engine: Engine, browser: Any, tmp_path: Path
) -> None:
    started = await engine.wait_for(is_event("control.started"), "control.started", 30)
    await engine.wait_for(is_event("engine.ready"), "engine.ready", 30)
    errors: list[str] = []
    page = await open_page(browser, f"http://127.0.0.1:{started['port']}/", errors)
    await page.evaluate("window.__sameDocument = 'yes'")
    await wait_for(page,   # the first cycle has been drawn
        "document.querySelectorAll('#leaderboard tbody tr[data-trader]').length === "
        f"{len(TRADERS)}")
    points_before = await chart_points(page)
    board_before = await page.evaluate(LEADERBOARD_TEXT)

    # Cycles keep coming: at least two more equity points per trader, and a different table.
    await wait_for(page,
        "Number(document.getElementById('equity-chart').dataset.points) >= "
        f"{points_before + 2 * len(TRADERS)}", timeout=15_000)
    await wait_for(page, f"{LEADERBOARD_TEXT} !== {board_before!r}", timeout=15_000)

    # Over half the replay in: the curves have shape and the EMA traders have traded (the picture
    # for the README), while the engine is still running.
    await wait_for(page,
        "Number(document.getElementById('equity-chart').dataset.points) >= "
        f"{CYCLES_FOR_PICTURE * len(TRADERS)}", timeout=20_000)
    await page.locator("#decisions", has_text="fast EMA crossed").wait_for(timeout=5_000)
    await _trade_in_view(page)
    series = await page.evaluate("Array.from(window.arena.series.keys()).sort()")
    legend = await page.locator("#legend .legend-item").count()
    board_rows = await page.locator("#leaderboard tbody tr[data-trader]").evaluate_all(
        "els => els.map(e => e.dataset.trader).sort()")
    positions = await page.locator("#positions tbody tr").count()
    same_document = await page.evaluate("window.__sameDocument")
    # A fill's toast stays up 4 s, ~16 simulated minutes here: keep it off the picture.
    shot = await save_screenshot(page, tmp_path / "page.png", hide="#toast")
    cycles_seen = len(engine.events("cycle.finished"))

    assert engine.proc.returncode is None, "the replay ended before the page was checked"
    engine.signal(signal.SIGTERM)
    code = await engine.exit_code(30)

    assert cycles_seen >= CYCLES_FOR_PICTURE // 2
    assert series == sorted(TRADERS)
    assert legend == len(TRADERS)
    assert board_rows == sorted(TRADERS)
    assert positions >= 6  # three for each buy-and-hold, and whatever the EMA traders hold
    assert same_document == "yes"  # updated in place, never reloaded
    assert shot.stat().st_size > 10_000
    assert errors == []
    assert code == 0, engine.tail()
    assert engine.events("engine.stopped")
    # JSON log mode: every stdout line is a JSON object, so no console table was printed.
    assert len(engine.lines) == len(engine.raw)
