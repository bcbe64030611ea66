"""The live page in a real headless chromium against a hand-written target, under CSP
`default-src 'self'`, at 1440x900 and at 390x844 (a phone).

Runs Debian's /usr/bin/chromium through playwright's Python driver (never `playwright install`).
tests/web/test_page_engine.py does the same against a real engine replaying the sample market,
and regenerates the docs' screenshots when ARENA_SCREENSHOTS=1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.bus import Bus
from engine.events import DecisionRejected, PositionClosed
from engine.settings import ControlSettings
from engine.web.control import ControlServer, event_payload
from tests.support.control import (
    START,
    STEP,
    TRADERS,
    FakeTarget,
    decision,
    leaderboard,
    sample_position,
    snapshot,
)
from tests.support.page import (
    PHONE,
    add_csp,
    launched_chromium,
    open_page,
    requires_chromium,
    wait_for,
)

pytestmark = [pytest.mark.browser, requires_chromium]

DASH = "\N{EN DASH}"  # what the page shows for "none"
TWELVE = ("claude", "gpt-4o", "deepseek", "gemini-pro", "grok", "qwen", "kimi", "llama",
          "mistral", "momentum", "buy_and_hold", "ema_cross")


class MidRunTarget(FakeTarget):
    """A target whose scheduler has already run cycles (the page is opened mid-run)."""

    def status(self) -> dict[str, Any]:
        st = super().status()
        st["jobs"] = [{"name": "trading_cycle", "running": False,
                       "last_start": "2026-01-01T00:55:00+00:00", "last_duration": 2.0,
                       "last_status": "ok"}]
        return st


async def _serve(target: FakeTarget, bus: Bus) -> tuple[ControlServer, asyncio.Task[None]]:
    server = ControlServer(ControlSettings(port=0), target, bus, None)
    add_csp(server.app)
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.started.wait(), 10)
    return server, task


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
async def served(bus: Bus) -> AsyncIterator[Any]:
    tasks: list[asyncio.Task[None]] = []

    async def serve(target: FakeTarget) -> str:
        server, task = await _serve(target, bus)
        tasks.append(task)
        return f"http://127.0.0.1:{server.port}/"

    yield serve
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_page_draws_the_curves_and_updates_chart_and_leaderboard_without_reload(
    bus: Bus, browser: Any, served: Any, tmp_path: Path
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
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    initial = len(TRADERS) * 96
    await wait_for(page,
        f"Number(document.getElementById('equity-chart').dataset.points) === {initial}")
    assert await page.locator("#equity-chart canvas").count() == 1
    assert await page.locator("#legend .legend-item").count() == len(TRADERS)
    rows = target.leaderboard()["rows"]
    leader_before = await page.locator("#leaderboard tbody tr").first.get_attribute("data-trader")
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

    await wait_for(page,
        "Number(document.getElementById('equity-chart').dataset.points) === "
        f"{initial + len(TRADERS)}")
    await wait_for(page,
        f"document.querySelector('#leaderboard tbody tr').dataset.trader === '{challenger}'")
    await page.locator("#decisions", has_text="reclaimed the 4h EMA50").wait_for()
    await wait_for(page, "document.querySelectorAll('#positions tbody tr').length === 4")
    last = await page.evaluate(f"window.arena.series.get('{challenger}').eq.at(-1)")
    decisions = await page.locator("#decisions .why").all_inner_texts()
    pixels_after = await page.evaluate(
        "document.querySelector('#equity-chart canvas').toDataURL()")
    legend = await page.locator("#legend .legend-item").evaluate_all(
        "els => els.map(e => e.dataset.trader)")
    board = await page.locator("#leaderboard tbody tr").evaluate_all(
        "els => els.map(e => e.dataset.trader)")
    same_document = await page.evaluate("window.__sameDocument")
    assert last == rows[0]["equity"] + 120.0
    assert pixels_after != pixels_before
    assert legend == board  # the legend follows the leaderboard's order
    assert decisions[0] == "ETH reclaimed the 4h EMA50 with rising volume"
    assert len(decisions) == 4
    assert same_document == "yes"  # updated in place, never reloaded
    assert errors == []


async def test_prices_and_quantities_follow_each_symbols_tick_and_step(
    bus: Bus, browser: Any, served: Any
) -> None:
    target = FakeTarget(traders=("claude", "momentum"), points=4)
    xrp = {**sample_position("claude", "XRPUSDT"), "qty": 2550.3, "entry_price": 1.9612,
           "mark": 1.9234, "stop_loss": 1.9, "take_profit": 2.1, "liquidation_price": None,
           "unrealized_pnl": 0.64}
    doge = {**sample_position("momentum", "DOGEUSDT"), "qty": 16000.0, "entry_price": 0.31234,
            "mark": 0.31, "liquidation_price": 0.0}
    target.trader = lambda name: {  # type: ignore[method-assign]
        "name": name, "account": {}, "decisions": [],
        "positions": [xrp] if name == "claude" else [doge]}
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    await wait_for(page, "document.querySelectorAll('#positions tbody tr').length === 2")
    cells = await page.locator("#positions tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))")
    heads = await page.locator("#positions thead th").all_inner_texts()
    col = {h.lower(): i for i, h in enumerate(heads)}
    xrp_row, doge_row = cells
    assert [xrp_row[col[k]] for k in ("qty", "entry", "mark", "sl", "tp", "liq")] == [
        "2,550.3", "1.9612", "1.9234", "1.9000", "2.1000", DASH]
    assert [doge_row[col[k]] for k in ("qty", "entry", "mark", "liq")] == [
        "16,000", "0.31234", "0.31000", DASH]
    assert errors == []


async def test_twelve_traders_get_twelve_distinct_colours_and_labelled_line_ends(
    bus: Bus, browser: Any, served: Any
) -> None:
    target = FakeTarget(traders=TWELVE, points=30)
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    await wait_for(page, "window.arena.chart.labels.length === 12")
    swatches = await page.locator("#legend .legend-item .swatch").evaluate_all(
        "els => els.map(e => getComputedStyle(e).backgroundColor)")
    labels = await page.evaluate("window.arena.chart.labels")
    x_labels = await page.evaluate("window.arena.chart.xLabels.filter(Boolean)")
    assert len(set(swatches)) == 12
    last = {name: points[-1][1] for name, points in target.history.items()}
    assert {lab["trader"]: lab["text"] for lab in labels} == {
        name: f"${eq:,.0f}" for name, eq in last.items()}
    assert x_labels and len(x_labels) == len(set(x_labels))  # never "00:00 00:00 00:01"
    assert errors == []


async def test_the_dollar_percent_toggle_redraws_returns(
    bus: Bus, browser: Any, served: Any, tmp_path: Path
) -> None:
    target = FakeTarget(points=30)
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    await wait_for(page, "window.arena.chart.labels.length === 5")
    await page.click("#mode-pct")
    await wait_for(page, "document.getElementById('equity-chart').dataset.mode === 'pct'")
    drawn = await page.evaluate("window.arena.chart.labels")
    labels = {lab["trader"]: lab["text"] for lab in drawn}
    rows = {r["trader"]: r for r in target.leaderboard()["rows"]}
    for name, text in labels.items():
        ret = rows[name]["return_pct"]
        assert text == f"{'+' if ret > 0 else ''}{ret:,.2f}%", name
    assert await page.locator("#mode-pct").get_attribute("aria-pressed") == "true"
    await page.click("#mode-usd")
    await wait_for(page, "document.getElementById('equity-chart').dataset.mode === 'usd'")
    assert all(lab["text"].startswith("$") for lab in await page.evaluate(
        "window.arena.chart.labels"))
    assert errors == []


async def test_decisions_filter_by_trader_hide_holds_and_name_a_baseline_once(
    bus: Bus, browser: Any, served: Any
) -> None:
    target = FakeTarget(points=4)
    ts = target.last_ts()
    for name, action, symbol, model in (
        ("claude", "open_long", "ETHUSDT", "claude-sonnet-4-5"),
        ("claude", "hold", "", "claude-sonnet-4-5"),
        ("deepseek", "hold", "", "deepseek-chat"),
        ("momentum", "open_long", "SOLUSDT", "momentum"),
    ):
        ts += 1
        target.decisions[name].append(event_payload(
            decision(name, f"{name} {action}", ts, action, symbol, model=model)))
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    items = page.locator("#decisions li.decision")
    await wait_for(page, "document.querySelectorAll('#decisions li.decision').length === 4")
    momentum = page.locator("#decisions li.decision[data-trader='momentum']")
    assert await momentum.locator(".model").count() == 0  # the baseline is named once
    assert await page.locator(
        "#decisions li.decision[data-trader='claude'] .model").first.inner_text() == (
        "claude-sonnet-4-5")
    await page.select_option("#decision-trader", "claude")
    await wait_for(page, "document.querySelectorAll('#decisions li.decision').length === 2")
    assert set(await items.evaluate_all("els => els.map(e => e.dataset.trader)")) == {"claude"}
    await page.check("#hide-holds")
    await wait_for(page, "document.querySelectorAll('#decisions li.decision').length === 1")
    assert await items.first.get_attribute("data-action") == "open_long"
    await page.select_option("#decision-trader", "")
    await wait_for(page, "document.querySelectorAll('#decisions li.decision').length === 2")
    assert errors == []


async def test_the_per_trader_view_shows_positions_trades_reasoning_and_refusals(
    bus: Bus, browser: Any, served: Any
) -> None:
    target = FakeTarget(points=8)
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    ts = target.last_ts()
    bus.publish(decision("claude", "ETH reclaimed the 4h EMA50 with rising volume", ts))
    bus.publish(DecisionRejected("c1", "claude", "BTCUSDT", "open_long", "max_leverage",
                                 "leverage 20 > max 10", ts))
    bus.publish(PositionClosed("claude", "ETHUSDT", "long", 0.448, 3_350.0, 3_420.55, 31.6,
                               1.52, "take_profit", START, "c1", ts))
    await page.locator("#decisions", has_text="reclaimed the 4h EMA50").wait_for()
    await page.locator("#leaderboard button.trader", has_text="claude").click()
    view = page.locator("#trader-view")
    await view.wait_for(state="visible")
    await view.locator("#tv-refusals", has_text="max_leverage").wait_for()
    assert await page.evaluate("location.hash") == "#trader=claude"
    assert await view.locator("#tv-title").text_content() == "claude"
    assert await view.locator("#tv-positions tbody tr").count() == 1
    trade = await view.locator("#tv-trades tbody tr").first.inner_text()
    assert "ETHUSDT" in trade and "+31.60" in trade and "take_profit" in trade
    assert "3,420.55" in trade and "0.448" in trade
    reasons = await view.locator("#tv-decisions .why").all_inner_texts()
    assert reasons == ["ETH reclaimed the 4h EMA50 with rising volume"]
    assert "leverage 20 > max 10" in await view.locator("#tv-refusals").inner_text()
    await view.locator("#tv-close").click()
    await view.wait_for(state="hidden")
    assert errors == []


async def test_a_trader_without_a_key_says_disabled_missing_key(
    bus: Bus, browser: Any, served: Any
) -> None:
    target = FakeTarget(points=4)
    target.disabled = ("gemini",)
    errors: list[str] = []
    page = await open_page(browser, await served(target) + "#trader=gemini", errors)
    row = page.locator("#leaderboard tbody tr[data-trader='gemini']")
    await row.wait_for()
    assert "disabled: missing key" in await row.inner_text()
    await page.locator("#tv-summary", has_text="disabled: missing key").wait_for()
    assert "unknown" not in await page.locator("#trader-view").inner_text()
    assert errors == []


async def test_a_page_opened_mid_run_shows_the_last_cycle(bus: Bus, browser: Any,
                                                          served: Any) -> None:
    errors: list[str] = []
    page = await open_page(browser, await served(MidRunTarget(points=4)), errors)
    await wait_for(page,
        "document.getElementById('cycle-badge').textContent === 'cycle ok at 00:55:02'")
    assert errors == []


async def test_page_shows_paused_state_and_stale_prices_and_posts_json(
    bus: Bus, browser: Any, served: Any
) -> None:
    target = FakeTarget(points=4)
    target.paused = True
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    await page.locator("#paused-badge").wait_for(state="visible")
    await page.locator(".price-chip[data-symbol='SOLUSDT']").wait_for()
    stale = await page.locator(".price-chip.stale").evaluate_all(
        "els => els.map(e => e.dataset.symbol)")
    fresh = await page.locator(".price-chip.fresh").evaluate_all(
        "els => els.map(e => e.dataset.symbol)")
    feed = await page.locator("#feed-badge").inner_text()
    positions = await page.locator("#positions tbody tr").count()
    requests = []
    page.on("request", lambda r: requests.append(r) if r.method == "POST" else None)
    await page.click("#btn-resume")
    await page.locator("#toasts .toast", has_text="resume: ok").wait_for()
    await page.locator("#paused-badge").wait_for(state="hidden")
    assert sorted(stale) == ["DOGEUSDT", "SOLUSDT"]
    assert sorted(fresh) == ["BTCUSDT", "ETHUSDT"]
    assert feed == "feed: 2 stale"
    assert positions == len(TRADERS)
    assert target.paused is False
    assert requests[0].headers["content-type"] == "application/json"
    assert errors == []


async def test_on_a_phone_the_header_is_compact_the_legend_folds_and_toasts_cover_nothing(
    bus: Bus, browser: Any, served: Any
) -> None:
    errors: list[str] = []
    page = await open_page(browser, await served(FakeTarget(points=24)), errors, viewport=PHONE)
    header = await page.locator("#top").bounding_box()
    assert header["height"] <= 100
    assert await page.evaluate("document.getElementById('legend-box').open") is False
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways page
    # The trader column stays in view while the leaderboard scrolls sideways.
    cell = page.locator("#leaderboard tbody tr").first.locator("td.pin")
    before = await cell.bounding_box()
    await page.evaluate("document.querySelector('#leaderboard').parentElement.scrollLeft = 400")
    await wait_for(page,
        "document.querySelector('#leaderboard').parentElement.scrollLeft > 100")
    after = await cell.bounding_box()
    box = await page.locator("#leaderboard").locator("xpath=..").bounding_box()
    assert before["x"] > box["x"] + 10  # after the rank column at first
    assert abs(after["x"] - box["x"]) <= 1  # then pinned to the left edge
    # A toast is a row of the header: everything below it moves down, nothing is covered.
    card_before = await page.locator("main .card").first.bounding_box()
    await page.evaluate("window.arena.toast('claude buy 0.052 BTCUSDT @ 97,000.0 (decision)')")
    toast = await page.locator("#toasts .toast").bounding_box()
    card_after = await page.locator("main .card").first.bounding_box()
    assert toast["y"] + toast["height"] <= card_after["y"]
    assert card_after["y"] > card_before["y"]
    assert errors == []


async def test_the_light_theme_follows_the_system(bus: Bus, browser: Any, served: Any) -> None:
    errors: list[str] = []
    url = await served(FakeTarget(points=4))
    light = await open_page(browser, url, errors, color_scheme="light")
    dark = await open_page(browser, url, errors, color_scheme="dark")
    bg = "getComputedStyle(document.body).backgroundColor"
    assert await light.evaluate(bg) == "rgb(246, 247, 249)"
    assert await dark.evaluate(bg) == "rgb(13, 17, 23)"
    assert errors == []


async def test_confidence_intervals_are_shown_when_the_leaderboard_has_them(
    bus: Bus, browser: Any, served: Any
) -> None:
    target = FakeTarget(points=4)
    rows = [dict(r) for r in target.leaderboard()["rows"]]
    rows[0].update(return_ci=[-0.5, 2.9], sharpe_ci=[0.12, 1.8])
    target.leaderboard = lambda: {"ts": START, "rows": rows}  # type: ignore[method-assign]
    errors: list[str] = []
    page = await open_page(browser, await served(target), errors)
    first = page.locator("#leaderboard tbody tr").first
    await first.locator(".ci").first.wait_for()
    cis = await first.locator(".ci").all_inner_texts()
    assert [c.strip() for c in cis] == ["[-0.50%, +2.90%]", "[0.12, 1.80]"]
    assert await page.locator("#leaderboard tbody tr").nth(1).locator(".ci").count() == 0
    assert errors == []
