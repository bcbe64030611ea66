"""In headless chromium: a page on another origin tries to command the engine and is refused,
while the engine's own page, under its Content-Security-Policy, still commands it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from engine.bus import Bus
from engine.settings import ControlSettings
from engine.web.control import ControlServer
from tests.support.control import FakeTarget
from tests.support.page import launched_chromium, open_page, requires_chromium, wait_for

pytestmark = [pytest.mark.browser, requires_chromium]

ATTACKER_PAGE = """<!doctype html>
<html><body>
<form id="form" method="POST" action="{engine}/pause" target="sink">
  <input name="paused" value="1">
</form>
<iframe name="sink"></iframe>
<script>
window.results = [];
async function attempt(name, path, init) {{
  try {{ await fetch("{engine}" + path, init); window.results.push(name + ":sent"); }}
  catch (e) {{ window.results.push(name + ":blocked"); }}
}}
window.attack = async () => {{
  await attempt("no-cors-trigger", "/trigger", {{method: "POST", mode: "no-cors", body: "{{}}"}});
  await attempt("no-cors-text-pause", "/pause",
                {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
                  body: "{{}}"}});
  await attempt("cors-json-trigger", "/trigger",
                {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: "{{}}"}});
  await attempt("cors-read-status", "/status", {{}});
  document.getElementById("form").submit();
  window.results.push("form:submitted");
}};
</script>
</body></html>"""


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launched_chromium() as chromium:
        yield chromium


async def _serve_engine(target: FakeTarget, bus: Bus) -> tuple[ControlServer, asyncio.Task[None]]:
    server = ControlServer(ControlSettings(port=0), target, bus, None)
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.started.wait(), 10)
    return server, task


async def _serve_attacker(engine_url: str) -> tuple[web.AppRunner, int]:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text=ATTACKER_PAGE.format(engine=engine_url),
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def test_cross_site_posts_are_refused_and_the_engines_own_page_still_works(
        bus: Bus, browser: Any) -> None:
    target = FakeTarget()
    server, task = await _serve_engine(target, bus)
    engine_url = f"http://127.0.0.1:{server.port}"
    attacker, attacker_port = await _serve_attacker(engine_url)
    try:
        with capture_logs() as logs:
            # The attacker's page is another site (localhost vs 127.0.0.1, another port).
            evil = await browser.new_page()
            await evil.goto(f"http://localhost:{attacker_port}/")
            await evil.evaluate("window.attack()")
            refused = lambda: [e for e in logs if e["event"] == "control.refused"]  # noqa: E731
            for _ in range(200):  # the form's POST arrives after the script returned
                if sum(e["path"] == "/pause" for e in refused()) >= 2:
                    break
                await asyncio.sleep(0.05)
            results = await evil.evaluate("window.results")
            await evil.close()
        # Every attempt failed in the attacker's page (the refusals also carry
        # Cross-Origin-Resource-Policy: same-origin, so not even an opaque answer gets through)...
        assert results == ["no-cors-trigger:blocked", "no-cors-text-pause:blocked",
                           "cors-json-trigger:blocked", "cors-read-status:blocked",
                           "form:submitted"]
        # ...and the server refused each request that reached it: both no-cors POSTs, the form's
        # POST, and the JSON POST's CORS preflight (so the POST itself was never sent).
        attacker_origin = f"http://localhost:{attacker_port}"
        seen = [(e["method"], e["path"]) for e in refused() if e["origin"] == attacker_origin]
        assert seen.count(("POST", "/pause")) == 2  # the text/plain fetch and the form
        assert ("POST", "/trigger") in seen and ("OPTIONS", "/trigger") in seen
        assert target.triggers == 0 and target.paused is False

        # The engine's own page, with its CSP, loads without a violation and commands the API.
        errors: list[str] = []
        page = await open_page(browser, engine_url + "/", errors)
        await page.click("#btn-pause")
        await wait_for(page, "document.body.innerText.includes('pause: ok')")
        assert target.paused is True
        await page.click("#btn-trigger")
        await wait_for(page, "document.body.innerText.includes('trigger: ok')")
        assert target.triggers == 1
        assert errors == []
        headers = (await page.goto(engine_url + "/")).headers
        assert headers["content-security-policy"].startswith("default-src 'self'")
        await page.close()
    finally:
        await attacker.cleanup()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
