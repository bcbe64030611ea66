"""Shared by the browser tests of the live page: Debian's chromium driven headless by playwright.

Never `playwright install`: the system's /usr/bin/chromium is launched through playwright's Python
driver. Tests that use it are skipped with a reason when it is absent, except under CI (`CI=true`,
as `.ci/run` sets it), where a missing chromium fails them: CI must not pass without them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# The docs' pictures of the page; written only when ARENA_SCREENSHOTS=1 (never by a plain run).
DOCS_IMG = Path(__file__).parents[2] / "docs" / "img"
SCREENSHOTS_FLAG = "ARENA_SCREENSHOTS"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
CSP = "default-src 'self'"  # what the page must work under: no inline script or style

UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
HAVE_CHROMIUM = Path(CHROMIUM).exists()

requires_chromium = pytest.mark.skipif(
    not HAVE_CHROMIUM and not UNDER_CI,
    reason=f"{CHROMIUM} is absent (apt-get install chromium; .ci/run does)",
)


@asynccontextmanager
async def launched_chromium() -> AsyncIterator[Any]:
    """Yield a headless Debian chromium driven by playwright; close it afterwards."""
    from playwright.async_api import async_playwright

    if not HAVE_CHROMIUM:
        pytest.fail(f"{CHROMIUM} is absent under CI=true: apt-get install chromium", pytrace=False)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                            headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser: Any, url: str, errors: list[str], *,
                    viewport: dict[str, int] | None = None, color_scheme: str = "dark") -> Any:
    """Open the live page at `url`, collecting JS errors and CSP violations in `errors`; wait
    until it is drawn. The default viewport is a 1440x900 desktop; `PHONE` is 390x844. Wait
    with `wait_for` below, never `page.wait_for_function` (its eval breaks under the CSP)."""
    page = await browser.new_page(viewport=viewport or DESKTOP, color_scheme=color_scheme,
                                  device_scale_factor=1)
    page.set_default_timeout(10_000)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}")
            if msg.type == "error" else None)
    await page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => "
        "console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI))")
    await page.goto(url)
    await wait_for(page, "document.body.dataset.ready === '1'")
    return page


async def wait_for(page: Any, expression: str, timeout: float = 10_000) -> None:
    """Wait until `expression` is truthy in the page.

    Polled through `page.evaluate` (a DevTools call the page's CSP does not govern), not
    `page.wait_for_function`, which evaluates the string inside the page: `default-src 'self'`
    forbids that, as it should.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout / 1000
    while not await page.evaluate(expression):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} ms waiting for: {expression}")
        await asyncio.sleep(0.05)


def chart_points(page: Any) -> Any:
    """Return (awaitable) the number of points drawn on the equity chart, all traders together."""
    return page.evaluate("Number(document.getElementById('equity-chart').dataset.points)")


def screenshots_requested() -> bool:
    """Return True when the docs' pictures are to be regenerated (ARENA_SCREENSHOTS=1)."""
    return os.environ.get(SCREENSHOTS_FLAG) == "1"


async def save_screenshot(page: Any, path: Path, *, hide: str = "", docs: str = "page.png",
                          full_page: bool = True) -> Path:
    """Save a screenshot of a page (or of one element: pass a locator) to `path` (a temporary
    file), and to docs/img/`docs` (shown in the README and the docs) when ARENA_SCREENSHOTS=1.

    `hide`: a CSS selector of transient elements left out of the picture.
    """
    element = hasattr(page, "bounding_box")  # a locator: that element only
    owner = page.page if element else page
    # Hidden through the CSSOM: playwright's `style=` option injects a <style> the CSP refuses.
    toggle = ("([sel, show]) => document.querySelectorAll(sel).forEach(e => show ? "
              "e.style.removeProperty('display') : e.style.setProperty('display', 'none', "
              "'important'))")
    if hide:
        await owner.evaluate(toggle, [hide, False])
    if element:
        await page.screenshot(path=str(path))
    else:
        await page.screenshot(path=str(path), full_page=full_page)
    if hide:
        await owner.evaluate(toggle, [hide, True])
    if screenshots_requested():
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / docs)
    return path


def add_csp(app: Any) -> None:
    """Send `CSP` with every answer of `app` (unless the server already sends a policy)."""
    async def prepare(_: Any, response: Any) -> None:
        response.headers.setdefault("Content-Security-Policy", CSP)
    app.on_response_prepare.append(prepare)
