"""What the live page shows beyond the data: which clock, whose colour, and that nothing is cut.

Headless Debian chromium against a hand-written target (tests/support/control.py), at 1440x900
unless said otherwise: a replay's badge with its progress and simulated time, "next cycle in"
naming its clock, trader colours fixed by the names (the same function as the report), in both
themes, no clipped column, sane axes before and at the first data, and the legend's return
rounded as the board's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine import palette
from engine.bus import Bus
from engine.settings import ControlSettings
from engine.web.control import ControlServer
from tests.support.control import START, TRADERS, FakeTarget, snapshot
from tests.support.page import (
    PHONE,
    add_csp,
    launched_chromium,
    open_page,
    requires_chromium,
    wait_for,
)

pytestmark = [pytest.mark.browser, requires_chromium]

SWATCHES = ("Object.fromEntries(Array.from(document.querySelectorAll('#legend .legend-item'))"
            ".map(e => [e.dataset.trader, getComputedStyle(e.querySelector('.swatch'))"
            ".backgroundColor]))")
NAME_COLOURS = ("Object.fromEntries(Array.from(document.querySelectorAll("
                "'#leaderboard tbody tr[data-trader] .trader')).map(e => [e.textContent, "
                "getComputedStyle(e).color]))")


def rgb(color: str) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


class ReversedTarget(FakeTarget):
    """The same traders, configured in the opposite order."""

    def traders(self) -> list[dict[str, Any]]:
        return list(reversed(super().traders()))


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
async def served(bus: Bus) -> AsyncIterator[Any]:
    tasks: list[asyncio.Task[None]] = []

    async def serve(target: FakeTarget) -> str:
        server = ControlServer(ControlSettings(port=0), target, bus, None)
        add_csp(server.app)
        tasks.append(asyncio.create_task(server.run()))
        await asyncio.wait_for(server.started.wait(), 10)
        return f"http://127.0.0.1:{server.port}/"

    yield serve
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_each_trader_has_the_reports_colour_whatever_the_order_in_both_themes(
    browser: Any, served: Any
) -> None:
    errors: list[str] = []
    seen = []
    for target, scheme in ((FakeTarget(points=6), "dark"), (ReversedTarget(points=6), "dark"),
                           (FakeTarget(points=6), "light")):
        page = await open_page(browser, await served(target), errors, color_scheme=scheme)
        await wait_for(page, f"document.querySelectorAll('#legend .legend-item').length === "
                             f"{len(TRADERS)}")
        seen.append((scheme, await page.evaluate(SWATCHES), await page.evaluate(NAME_COLOURS)))
        await page.close()
    for scheme, swatches, names in seen:
        expected = {n: rgb(c) for n, c in palette.colors(TRADERS, scheme).items()}  # type: ignore[arg-type]
        assert swatches == expected, scheme
        assert names == expected, scheme
    assert seen[0] == seen[1]  # configured in reverse: the same colours
    assert len(set(seen[0][1].values())) == len(TRADERS)
    assert errors == []


async def test_the_page_places_fourteen_names_as_the_report_does(
    browser: Any, served: Any
) -> None:
    # More names than colours, colliding hashes, and every kind of character a name may hold
    # (settings allow A-Z, a-z, 0-9, "_", "." and "-"), which decides the order they are placed in.
    names = ("claude", "gpt-4o", "deepseek", "gemini-pro", "grok", "Qwen", "kimi", "llama.3",
             "mistral", "momentum", "buy_and_hold", "ema_cross", "EMA-cross_2", "9lives")
    target = FakeTarget(traders=names, points=4)
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    await wait_for(page, f"document.querySelectorAll('#legend .legend-item').length === "
                         f"{len(names)}")
    swatches = await page.evaluate(SWATCHES)
    assert swatches == {n: rgb(c) for n, c in palette.colors(names, "dark").items()}
    assert errors == []


async def test_a_replay_shows_its_progress_and_simulated_time_and_the_next_cycle_says_simulated(
    browser: Any, served: Any
) -> None:
    target = FakeTarget(points=6)
    target.arena = {"mode": "replay", "source": "ab" * 32}
    target.replay = {"frames_done": 13684, "frames_total": 38447, "percent": 35.6,
                     "sim_time": "2026-01-01T00:32:00+00:00", "speed_x": 1490.1,
                     "eta_s": 2.3, "finished": False}
    target.next_in = 176.0
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    await wait_for(page, "!document.getElementById('mode-badge').hidden")
    assert await page.locator("#mode-badge").inner_text() == "replay 35% · at 2026-01-01 00:32 UTC"
    assert "simulated" in await page.locator("#mode-badge").get_attribute("title")
    assert await page.locator("#next-badge").inner_text() == "next cycle in 176s simulated"
    assert "live" not in await page.locator("#feed-badge").inner_text()
    assert "live" not in await page.locator("#stream-badge").inner_text()
    header = await page.locator("#top").bounding_box()
    assert header["height"] < 70  # the badges still fit on one row at 1440 px
    assert errors == []


async def test_a_live_run_has_no_replay_badge_and_counts_wall_clock_seconds(
    browser: Any, served: Any
) -> None:
    errors: list[str] = []
    page = await open_page(browser, await served(FakeTarget(points=6)), errors)
    await wait_for(page, "document.getElementById('next-badge').textContent.startsWith('next')")
    assert await page.locator("#mode-badge").is_hidden()
    assert await page.locator("#next-badge").inner_text() == "next cycle in 120s"
    assert await page.locator("#next-badge").get_attribute("title") == "wall-clock seconds"
    assert errors == []


async def test_no_leaderboard_column_is_cut_off_at_1440_px(browser: Any, served: Any) -> None:
    target = FakeTarget(points=6)
    target.disabled = ("gemini-2.5-pro-preview",)
    rows = [dict(r) for r in target.leaderboard()["rows"]]
    for r in rows:  # every figure and interval the engine's rows can carry
        r.update(return_ci=[-12.345, 23.456], sharpe_ci=[-155.18, 144.53], sortino=-89.33,
                 net_return_pct=r["return_pct"] - 0.004, liquidations=2)
    target.leaderboard = lambda: {"ts": START, "rows": rows}  # type: ignore[method-assign]
    configured = target.traders
    target.traders = lambda: [  # type: ignore[method-assign]
        {**t, "status": "cooldown", "detail": "until 2026-01-01T00:30:00+00:00"}
        if t["name"] == "deepseek" else t for t in configured()]
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    await wait_for(page, "document.querySelectorAll('#leaderboard tbody tr').length === "
                         f"{len(TRADERS) + 1}")
    overflow = await page.evaluate(
        "(() => { const box = document.querySelector('#leaderboard').parentElement;"
        " return [box.scrollWidth, box.clientWidth]; })()")
    cut = await page.evaluate(
        "Array.from(document.querySelectorAll('#leaderboard td, #leaderboard th'))"
        ".filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent)")
    status = await page.locator("#leaderboard tr[data-trader='gemini-2.5-pro-preview'] "
                                "td.status-cell").get_attribute("title")
    assert overflow[0] <= overflow[1], overflow
    assert cut == []
    assert status == "disabled: missing key"
    assert errors == []


async def test_before_any_equity_point_the_chart_says_so_and_a_first_point_gets_narrow_axes(
    bus: Bus, browser: Any, served: Any
) -> None:
    target = FakeTarget(points=1)
    target.equity_history = lambda: {}  # type: ignore[method-assign]
    target.leaderboard = lambda: {"ts": START, "rows": []}  # type: ignore[method-assign]
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    await page.locator("#equity-chart .chart-empty").wait_for()
    assert await page.locator("#equity-chart canvas").count() == 0
    for i, name in enumerate(TRADERS):  # the start snapshots: one instant, nearly one value
        bus.publish(snapshot(name, 10_000.0 + i * 0.5, START))
    await wait_for(page, f"window.arena.chart.labels.length === {len(TRADERS)}")
    x_labels = await page.evaluate("window.arena.chart.xLabels.filter(Boolean)")
    y_labels = await page.evaluate("window.arena.chart.yLabels")
    minutes = [int(x[:2]) * 60 + int(x[3:5]) for x in x_labels]
    assert all(m <= 3 or m >= 24 * 60 - 3 for m in minutes), x_labels  # minutes around 00:00
    values = [float(y.replace(",", "")) for y in y_labels]
    assert values and all(9_990 <= v <= 10_010 for v in values), y_labels
    decimals = {len(y.split(".")[1]) if "." in y else 0 for y in y_labels}
    assert len(decimals) == 1 and len(set(y_labels)) == len(y_labels)  # one precision, no repeats
    assert errors == []


async def test_the_legend_shows_each_return_as_the_board_rounds_it(
    browser: Any, served: Any
) -> None:
    target = FakeTarget(points=3)
    # Returns that sit on a rounding edge: -0.005 % and -0.0001 %.
    target.history["claude"][-1] = (target.history["claude"][-1][0], 9_999.5)
    target.history["deepseek"][-1] = (target.history["deepseek"][-1][0], 9_999.99)
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    await wait_for(page, f"document.querySelectorAll('#legend .legend-item').length === "
                         f"{len(TRADERS)}")
    legend = await page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('#legend .legend-item'))"
        ".map(e => [e.dataset.trader, e.querySelector('.ret').textContent]))")
    heads = await page.locator("#leaderboard thead th").all_inner_texts()
    col = [h.lower() for h in heads].index("return")
    board = await page.locator("#leaderboard tbody tr[data-trader]").evaluate_all(
        f"rows => Object.fromEntries(rows.map(r => [r.dataset.trader, "
        f"r.cells[{col}].firstChild.textContent]))")
    assert legend == board
    assert legend["claude"] == "-0.01%"
    assert legend["deepseek"] == "0.00%"  # never "-0.00%"
    assert errors == []


async def test_on_a_phone_trader_names_stay_on_one_line(browser: Any, served: Any) -> None:
    errors: list[str] = []
    page = await open_page(browser, await served(FakeTarget(points=6)), errors, viewport=PHONE)
    await wait_for(page, f"document.querySelectorAll('#leaderboard tbody tr').length === "
                         f"{len(TRADERS)}")
    heights = await page.locator("#leaderboard tbody .trader").evaluate_all(
        "els => els.map(e => e.getBoundingClientRect().height)")
    line = await page.evaluate(
        "parseFloat(getComputedStyle(document.querySelector('#leaderboard .trader')).lineHeight)")
    assert heights and max(heights) < 1.5 * line, heights
    assert errors == []
