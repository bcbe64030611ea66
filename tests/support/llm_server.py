"""A local LLM API server on 127.0.0.1 (Anthropic messages, OpenAI/DeepSeek chat completions,
and any number of other OpenAI-compatible endpoints), for whole-session tests: the providers'
base_url settings point here, with dummy keys. Binance's endpoints are the fake Binance's
(`engine.market.fakebinance`).

An OpenAI-compatible endpoint NAME (`compatible={NAME: refused modes}`) answers at
`{url}/NAME/v1/chat/completions` in the shape of vLLM's and Ollama's answers: a request in a mode
it refuses (json_schema, tool, json_object) gets the 400 such servers send; otherwise it answers
in the mode asked (a tool call for tools, JSON content for the rest), with a dated model version.

Each answer is a function of the prompt alone: a trader with no open position opens one, a
trader holding one closes it. Bodies are the shapes of the hand-written fixtures; every response
carries a request id, a `set-cookie` and an organisation header (which a recording must drop).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from engine.traders.fixtures import load_fixture
from engine.traders.prompt import ANSWER_TOOL

NO_POSITION = "plan): none"  # the prompt's "## Your open positions (...your plan): none"
PLAYS = {"anthropic": ("BTCUSDT", "open_long", 1000.0), "openai": ("ETHUSDT", "open_short", 500.0),
         "deepseek": ("SOLUSDT", "open_long", 300.0)}
OTHER_PLAY = ("BTCUSDT", "open_short", 400.0)  # any other provider's
COMPATIBLE_VERSION = "-2025-09-23"  # the dated snapshot an OpenAI-compatible endpoint says it ran


Brackets = dict[str, tuple[float | None, float | None]]  # symbol → (stop-loss, take-profit)


def _actions(provider: str, prompt: str, brackets: Brackets | None = None
             ) -> list[dict[str, Any]]:
    symbol, action, size = PLAYS.get(provider, OTHER_PLAY)
    if symbol not in prompt:  # a blind prompt: play the first asset it names
        found = re.search(r"\bASSET_[A-Z]+\b", prompt)
        symbol = found.group(0) if found else symbol
    opening = NO_POSITION in prompt
    stop, take = (brackets or {}).get(symbol, (None, None)) if opening else (None, None)
    return [{"symbol": symbol, "action": action if opening else "close",
             "size_usdt": size if opening else None, "leverage": 2 if opening else None,
             "stop_loss": stop, "take_profit": take, "confidence": 0.6,
             "reason": "flat: open" if opening else "in a position: close"}]


class LLMServer:
    """Serves /v1/messages, /v1/chat/completions, /chat/completions and each compatible
    endpoint's /NAME/v1/chat/completions."""

    def __init__(self, delay: float = 0.05, brackets: Brackets | None = None,
                 compatible: dict[str, tuple[str, ...]] | None = None) -> None:
        self.delay = delay  # seconds each LLM answer takes (the API's latency)
        self.brackets = brackets  # stop-loss and take-profit of each opening, per symbol
        self.compatible = compatible or {}  # endpoint name → the modes it refuses
        self.modes: dict[str, list[str]] = {name: [] for name in self.compatible}  # asked, in order
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.refuse = 0  # the next Anthropic requests answered 429 (rate limited)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> LLMServer:
        app = web.Application()
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/chat/completions", self._deepseek)
        app.router.add_post("/{name}/v1/chat/completions", self._compatible)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def _headers(self, id_header: str, org_header: str) -> dict[str, str]:
        n = len(self.requests)
        return {id_header: f"req_local_{n:04d}", org_header: "org-local-test",
                "set-cookie": f"__cf_bm=cookie{n}; path=/; HttpOnly"}

    async def _anthropic(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("anthropic", body))
        if self.refuse > 0:
            self.refuse -= 1
            return web.json_response({"type": "error", "error": {
                "type": "rate_limit_error", "message": "rate limited"}}, status=429)
        await asyncio.sleep(self.delay)
        out = copy.deepcopy(load_fixture("anthropic/tool_call")["response"]["body"])
        out["id"] = f"msg_local_{len(self.requests):04d}"
        out["content"][0]["input"] = {
            "actions": _actions("anthropic", body["messages"][0]["content"], self.brackets)}
        return web.json_response(out, headers=self._headers("request-id",
                                                            "anthropic-organization-id"))

    async def _chat(self, request: web.Request, provider: str, fixture: str) -> web.Response:
        body = await request.json()
        self.requests.append((provider, body))
        await asyncio.sleep(self.delay)
        out = copy.deepcopy(load_fixture(fixture)["response"]["body"])
        out["id"] = f"chatcmpl-local-{len(self.requests):04d}"
        user = body["messages"][1]["content"]
        out["choices"][0]["message"]["content"] = json.dumps(
            {"actions": _actions(provider, user, self.brackets)})
        return web.json_response(out, headers=self._headers("x-request-id",
                                                            "openai-organization"))

    async def _compatible(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.compatible:
            raise web.HTTPNotFound()
        body = await request.json()
        self.requests.append((name, body))
        fmt = (body.get("response_format") or {}).get("type")
        mode = "tool" if body.get("tools") else fmt or "text"
        self.modes[name].append(mode)
        if mode in self.compatible[name]:
            what = {"tool": "tools / tool_choice"}.get(mode, f"response_format {mode}")
            return web.json_response(
                {"object": "error", "message": f"{what} is not supported by this server",
                 "type": "BadRequestError", "param": None, "code": 400}, status=400)
        await asyncio.sleep(self.delay)
        out = copy.deepcopy(load_fixture("openai/json_schema")["response"]["body"])
        out["id"] = f"chatcmpl-{name}-{len(self.requests):04d}"
        out["model"] = body["model"] + COMPATIBLE_VERSION
        user = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
        answer = json.dumps({"actions": _actions(name, user, self.brackets)})
        message = out["choices"][0]["message"]
        if mode == "tool":
            message["content"] = None
            message["tool_calls"] = [{"id": f"call_{len(self.requests):04d}", "type": "function",
                                      "function": {"name": ANSWER_TOOL, "arguments": answer}}]
            out["choices"][0]["finish_reason"] = "tool_calls"
        else:
            message["content"] = answer
        return web.json_response(out, headers={"x-request-id": f"req-{name}-{len(self.requests)}"})

    async def _openai(self, request: web.Request) -> web.Response:
        return await self._chat(request, "openai", "openai/json_schema")

    async def _deepseek(self, request: web.Request) -> web.Response:
        return await self._chat(request, "deepseek", "deepseek/json_mode")


# ---------------------------------------------------------------- a model that always trades

TRADED = ("BTCUSDT", "ETHUSDT")
_MARKET_LINE = re.compile(r"^([A-Z0-9]+USDT) (\{.*\})$", re.M)


class TradingModel:
    """A chat-completions endpoint whose every answer trades each symbol it is shown."""

    def __init__(self) -> None:
        self.calls = 0

    def answer(self, prompt: str) -> dict[str, Any]:
        self.calls += 1
        actions = []
        for symbol, data in _MARKET_LINE.findall(prompt):
            if symbol not in TRADED:
                continue
            price = float(json.loads(data)["price"])
            long = (self.calls + len(actions)) % 2 == 0
            away = price * 0.0012
            actions.append({
                "symbol": symbol, "action": "open_long" if long else "open_short",
                "size_usdt": 500, "leverage": 2, "confidence": 0.6,
                "stop_loss": round(price - away if long else price + away, 2),
                "take_profit": round(price + away if long else price - away, 2),
                "reason": "crash test: always trade",
            })
        return {"actions": actions}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
        content = json.dumps(self.answer(prompt))
        return web.json_response({
            "id": f"crash-{self.calls}", "object": "chat.completion", "created": 1767225600,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
        })


@contextlib.asynccontextmanager
async def serve_model(model: TradingModel) -> AsyncIterator[str]:
    """Serve `model`'s chat completions on 127.0.0.1; yield the base URL."""
    app = web.Application()
    app.router.add_post("/chat/completions", model.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
