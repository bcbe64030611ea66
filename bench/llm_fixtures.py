"""The three LLM providers' recorded answers, served over HTTP on 127.0.0.1 by a process of its own.

The soak's LLM traders are the real SDK clients over aiohttp, pointed (by their `base_url`
settings) at this server, which answers every request with its provider's recorded fixture
(`engine/traders/fixtures`: Anthropic's tool call, OpenAI's json_schema answer, DeepSeek's JSON
mode), status, headers and body as recorded. The engine's side of each call is therefore what
it is live: the request is built and written to a socket, the loop runs other work while the
answer is on its way, and the answer is read and parsed. aioresponses, which the tests use,
answers inside the call instead: no socket, no turn of the loop between sending and parsing, and
a mock that records every call (stack included); in the soak, that made each LLM decision one
step of the loop several milliseconds long, which a live engine never runs.

The server runs in a separate process (started with `spawn`), so serving costs the engine's
process nothing; `served()` returns how many requests each provider was sent since the last
call.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import urllib.request
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from bench.common import serve_locally

FIXTURES = {"anthropic": "anthropic/tool_call", "openai": "openai/json_schema",
            "deepseek": "deepseek/json_mode"}


def _serve(conn: Any) -> None:
    """Child process: serve every fixture at its recorded path until told to stop."""
    from aiohttp import web

    from engine.traders.fixtures import load_fixture, response_headers

    counts = dict.fromkeys(FIXTURES, 0)

    def answer(provider: str, fixture: dict[str, Any]) -> Any:
        body = fixture["response"]["body"]
        text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        status, headers = fixture["response"]["status"], response_headers(fixture)

        async def handle(request: web.Request) -> web.Response:
            await request.read()
            counts[provider] += 1
            return web.Response(status=status, text=text, headers=headers)

        return handle

    async def served(request: web.Request) -> web.Response:
        out = dict(counts)
        for provider in counts:
            counts[provider] = 0
        return web.json_response(out)

    async def main() -> None:
        app = web.Application()
        paths = {}
        for provider, name in FIXTURES.items():
            fixture = load_fixture(name)
            paths[provider] = path = urlsplit(fixture["request"]["url"]).path
            app.router.add_route(fixture["request"]["method"], path, answer(provider, fixture))
        app.router.add_get("/served", served)
        runner, port = await serve_locally(app)
        conn.send({"port": port, "paths": paths})
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, conn.recv)  # the stop message
        finally:
            await runner.cleanup()

    asyncio.run(main())


class FixtureProcess:
    """The recorded LLM answers on 127.0.0.1, in a child process, while the `with` lasts."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True,
                                 name="llm-fixtures")
        self.port = 0
        self.paths: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FixtureProcess:
        self._proc.start()
        if not self._conn.poll(60):
            self._proc.kill()
            raise RuntimeError("the LLM fixture server did not start")
        started = self._conn.recv()
        self.port, self.paths = started["port"], started["paths"]
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()

    def base_urls(self) -> dict[str, str]:
        """Return the settings overrides pointing the three providers here (each `base_url`
        is its recorded URL's path less the SDK's own part)."""
        prefix = {"anthropic": self.paths["anthropic"].removesuffix("/v1/messages"),
                  "openai": self.paths["openai"].removesuffix("/chat/completions"),
                  "deepseek": self.paths["deepseek"].removesuffix("/chat/completions")}
        return {f"llm.providers.{p}.base_url": self.url + rest for p, rest in prefix.items()}

    def served(self) -> dict[str, int]:
        """Return the requests each provider was sent since the last call (and reset them)."""
        with urllib.request.urlopen(self.url + "/served", timeout=10) as resp:
            out: dict[str, int] = json.loads(resp.read())
        return out
