"""The live page of a real engine, in a real headless chromium, while the engine replays a market.

A `python run.py --replay tests/data/sample.jsonl.gz --speed 150` process (1.5 h of recorded
market in about 36 s, rule-based traders only, a trading cycle every simulated minute, the test's
own Postgres database) serves its control API on a free port. Debian's /usr/bin/chromium opens
the page and, without reloading it, sees the equity chart gain points and the leaderboard change
as cycles happen; then a screenshot is saved and SIGTERM stops the engine with exit code 0.
Set ARENA_SCREENSHOTS=1 to regenerate the docs' pictures in docs/img/ from it (a plain run
writes none: its screenshots go to a temporary directory).
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
    PHONE,
    chart_points,
    launched_chromium,
    open_page,
    requires_chromium,
    save_screenshot,
    wait_for,
)
from tests.support.process import Engine, is_event

SPEED = "150"  # the sample's 1.5 h of market in ~36 s: a cycle every ~0.4 s of real time
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
# Binance's filters (as in settings.toml): the page formats each symbol by its tick and step.
FILTERS = "".join(
    f"[broker.symbols.{symbol}]\nstep_size = {step}\ntick_size = {tick}\n"
    for symbol, step, tick in (("BTCUSDT", 0.001, 0.1), ("ETHUSDT", 0.001, 0.01),
                               ("SOLUSDT", 1, 0.01), ("BNBUSDT", 0.01, 0.01),
                               ("XRPUSDT", 0.1, 0.0001), ("DOGEUSDT", 1, 0.00001)))

pytestmark = [pytest.mark.browser, requires_chromium]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
async def engine(database_url: str, tmp_path: Path) -> AsyncIterator[Engine]:
    traders = BUY_AND_HOLD + EMA_CROSS + MORE_TRADERS + FILTERS
    running = await start_replay(database_url, tmp_path, traders, "--speed", SPEED,
                                 "--log-format", "json", control=True)
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
    shot = await save_screenshot(page, tmp_path / "page.png", hide="#toasts", full_page=False)
    scraped = await page.evaluate("fetch('/metrics').then(r => r.text())")
    # The same chart in % return, and one trader's own view (README pictures).
    await page.click("#mode-pct")
    await wait_for(page, "document.getElementById('equity-chart').dataset.mode === 'pct'")
    pct_labels = await page.evaluate("window.arena.chart.labels.map(l => l.text)")
    await save_screenshot(page.locator("main .card").first, tmp_path / "percent.png",
                          docs="page-percent.png")
    await page.click("#mode-usd")
    await page.locator("#leaderboard button.trader", has_text="ema_cross_5x").click()
    await page.locator("#tv-decisions li.decision").first.wait_for()
    await page.locator("#tv-trades tbody tr:not(.empty), #tv-positions tbody tr:not(.empty)"
                       ).first.wait_for()
    await save_screenshot(page.locator("#trader-view"), tmp_path / "trader.png",
                          hide="#top", docs="page-trader.png")  # the sticky header off it
    # A phone opening the page mid-run: the last cycle is known at once.
    phone = await open_page(browser, f"http://127.0.0.1:{started['port']}/", errors,
                            viewport=PHONE)
    phone_cycle = await phone.locator("#cycle-badge").inner_text()
    await save_screenshot(phone, tmp_path / "phone.png", hide="#toasts", docs="page-phone.png",
                          full_page=False)
    cycles_seen = len(engine.events("cycle.finished"))
    await phone.close()
    await page.close()  # before the engine stops: no reconnecting stream errors
    page_errors = list(errors)

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
    assert page_errors == []
    assert code == 0, engine.tail()
    assert engine.events("engine.stopped")
    assert all(label.endswith("%") for label in pct_labels) and len(pct_labels) == len(TRADERS)
    assert phone_cycle.startswith("cycle ok at ")
    for trader in TRADERS:
        assert f'arena_trader_status{{status="active",trader="{trader}"}} 1.0' in scraped
    assert "_created" not in scraped and "process_resident_memory_bytes" in scraped
    # Durations are wall time: ~50 simulated minutes of cycles took a few real seconds.
    cycle_seconds = sum(float(line.split()[-1]) for line in scraped.splitlines()
                        if line.startswith("arena_cycle_duration_seconds_sum"))
    assert 0 < cycle_seconds < 60
    # One log line per fill and per position opened, with the fill's facts.
    fills = engine.events("order.filled")
    assert fills and {"trader", "symbol", "side", "quantity", "price", "fee", "reason"} <= set(
        fills[0])
    assert {f["trader"] for f in fills} >= {"buy_and_hold", "alts_2x"}
    assert len(engine.events("position.opened")) >= 6
    assert engine.events("signal.received")[-1]["signal"] == "SIGTERM"
    # The writer reports the run's totals, not only its last flush.
    (stopped,) = engine.events("writer.stopped")
    assert stopped["written"] >= len(fills) + cycles_seen
    # JSON log mode: every stdout line is a JSON object, so no console table was printed.
    assert len(engine.lines) == len(engine.raw)
