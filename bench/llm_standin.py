"""A local LLM stand-in for the LLM-bound benchmarks: OpenAI chat completions on 127.0.0.1 that
answer after a fixed latency.

Each answer is a function of the prompt alone: with no open position the trader opens a short
of the first symbol the prompt's market lists, holding one it closes it, so every other cycle
trades (fills, positions and snapshots for the writer, as a real model's answers would). The
body is the recorded fixture's shape (`engine/traders/fixtures/openai/json_schema.json`) with
usage; the server runs in a thread of its own with its own event loop, so the benchmark's own
loops never delay an answer.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
from types import TracebackType
from typing import Any

from aiohttp import web

from bench.common import serve_locally
from engine.traders.fixtures import load_fixture

NO_POSITION = "plan): none"  # the prompt's "## Your open positions (... your plan): none"
_SYMBOL = re.compile(r"^([A-Z0-9]+USDT) \{", re.M)


class SlowModel:
    """Serves /v1/chat/completions, each answer `latency` seconds after its request arrived."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.answered = 0
        self.port = 0
        self._body = load_fixture("openai/json_schema")["response"]["body"]
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name="llm-standin", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SlowModel:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the LLM stand-in did not start")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._answer)
        runner, self.port = await serve_locally(app)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        arrived = asyncio.get_running_loop().time()
        body = await request.json()
        prompt = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
        out = copy.deepcopy(self._body)
        self.answered += 1
        out["id"] = f"chatcmpl-bench-{self.answered}"
        out["model"] = body.get("model", out.get("model"))
        out["choices"][0]["message"]["content"] = json.dumps({"actions": _actions(prompt)})
        await asyncio.sleep(max(0.0, arrived + self.latency - asyncio.get_running_loop().time()))
        return web.json_response(out)


def _actions(prompt: str) -> list[dict[str, Any]]:
    found = _SYMBOL.search(prompt)
    if found is None:
        return []
    if NO_POSITION in prompt:
        return [{"symbol": found.group(1), "action": "open_short", "size_usdt": 500.0,
                 "leverage": 2, "stop_loss": None, "take_profit": None, "confidence": 0.6,
                 "reason": "flat: open"}]
    return [{"symbol": found.group(1), "action": "close", "size_usdt": None, "leverage": None,
             "stop_loss": None, "take_profit": None, "confidence": 0.6,
             "reason": "in a position: close"}]
