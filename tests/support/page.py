"""Shared by the browser tests of the live page: Debian's chromium driven headless by playwright.

Never `playwright install`: the system's /usr/bin/chromium is launched through playwright's Python
driver. Tests that use it are skipped with a reason when it is absent (`.ci/run` installs it).
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
README_SCREENSHOT = Path(__file__).parents[1] / "data" / "page.png"

requires_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} is absent (apt-get install chromium; .ci/run does)",
)


@asynccontextmanager
async def launched_chromium() -> AsyncIterator[Any]:
    """Yield a headless Debian chromium driven by playwright; close it afterwards."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                            headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser: Any, url: str, errors: list[str]) -> Any:
    """Open the live page at `url`, collecting JS errors in `errors`; wait until it is drawn."""
    page = await browser.new_page(viewport={"width": 1440, "height": 1100})
    page.set_default_timeout(10_000)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}")
            if msg.type == "error" else None)
    await page.goto(url)
    await page.wait_for_function("document.body.dataset.ready === '1'")
    return page


def chart_points(page: Any) -> Any:
    """Return (awaitable) the number of points drawn on the equity chart, all traders together."""
    return page.evaluate("Number(document.getElementById('equity-chart').dataset.points)")


async def save_screenshot(page: Any, path: Path, *, hide: str = "") -> Path:
    """Save a full-page screenshot to `path`, and to the README's when ARENA_UPDATE_SCREENSHOT=1.

    `hide`: a CSS selector of transient overlays left out of the picture.
    """
    style = f"{hide} {{ visibility: hidden !important; }}" if hide else None
    await page.screenshot(path=str(path), full_page=True, style=style)
    if os.environ.get("ARENA_UPDATE_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_SCREENSHOT)
    return path
