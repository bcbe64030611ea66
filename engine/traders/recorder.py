"""LLM HTTP exchanges as data: `--record-llm DIR` fixture files and the session recording's bodies.

An exchange is `{"provider", "request": {"method", "url", "headers", "body"}, "response":
{"status", "headers", "body"}}`, bodies parsed as JSON when they are JSON. What identifies the
account is left out on both sides: API keys, cookies and organisation/project headers of the
request, and `set-cookie` and organisation/project headers of the response (e.g.
`anthropic-organization-id`, `openai-organization`, `openai-project`); every text left is
redacted (`engine.redact`), so a body that echoes the key is stored without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from engine.redact import redact_value

if TYPE_CHECKING:
    from engine.clock import Clock

log = structlog.get_logger("llm")

_SECRET_REQUEST_HEADERS = {"authorization", "x-api-key", "api-key", "cookie"}
_SECRET_RESPONSE_HEADERS = {"set-cookie", "set-cookie2"}
# Headers describing the original transfer, not the body a replay serves.
TRANSFER_HEADERS = {"content-length", "transfer-encoding", "content-encoding", "connection"}


def _identifies_account(name: str) -> bool:
    name = name.lower()
    return "organization" in name or "organisation" in name or name.endswith("-project")


def request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return request headers without API keys, cookies and organisation/project headers."""
    return {k: v for k, v in headers.items()
            if k.lower() not in _SECRET_REQUEST_HEADERS and not _identifies_account(k)}


def response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return response headers without set-cookie and organisation/project headers."""
    return {k: v for k, v in headers.items()
            if k.lower() not in _SECRET_RESPONSE_HEADERS and not _identifies_account(k)}


def exchange_of(provider: str, response: Any) -> dict[str, Any]:
    """Return an httpx response (already read) and its request as an exchange, every text in it
    redacted (`engine.redact`): a 401 body echoing the API key is stored without it."""
    request = response.request
    exchange = {
        "provider": provider,
        "request": {
            "method": request.method,
            "url": str(request.url),
            "headers": request_headers(dict(request.headers.items())),
            "body": json_or_text(request.content.decode("utf-8", "replace")),
        },
        "response": {
            "status": response.status_code,
            "headers": response_headers(dict(response.headers.items())),
            "body": json_or_text(response.text),
        },
    }
    redacted: dict[str, Any] = redact_value(exchange)
    return redacted


def json_or_text(text: str) -> Any:
    """Return `text` parsed as JSON, or the text itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:  # what orjson refuses and json takes: integers past 64 bits, NaN
        return json.loads(text)
    except ValueError:
        return text


def body_bytes(body: Any) -> bytes:
    """Return a stored body as the bytes to serve (JSON re-encoded, text as is)."""
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return text.encode("utf-8")


class FixtureRecorder:
    """Saves every request/response exchange of one trader as a replayable fixture file."""

    def __init__(self, directory: str | Path, trader: str, provider: str, clock: Clock) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.trader = trader
        self.provider = provider
        self._clock = clock
        self._seq = 0
        self.saved: list[Path] = []

    async def on_response(self, response: Any) -> None:
        """Save `response` and the request that produced it (an httpx response hook)."""
        await response.aread()
        self._seq += 1
        path = self.directory / (f"{self.trader}-{int(self._clock.time() * 1000)}-"
                                 f"{self._seq:03d}-{response.status_code}.json")
        path.write_text(json.dumps(exchange_of(self.provider, response), indent=1,
                                   ensure_ascii=False) + "\n", encoding="utf-8")
        self.saved.append(path)
        log.info("llm.recorded", trader=self.trader, path=str(path),
                 status=response.status_code)


def replay_transport(httpx_module: Any, client: Any) -> Any:
    """Return an httpx transport (of the SDK's own httpx: `httpx` for OpenAI, `httpx2` for
    Anthropic) serving `client.serving`, the record an `engine.traders.providers.LLMClient` is
    answering from, as the HTTP response the SDK then parses."""

    class ReplayTransport(httpx_module.AsyncBaseTransport):  # type: ignore[misc]
        async def handle_async_request(self, request: Any) -> Any:
            record = client.serving
            if record is None:
                raise httpx_module.ConnectError("replay: no record to serve", request=request)
            error = record.get("error") or {}
            response = record.get("response")
            if response is None:
                message = error.get("message") or "recorded failure"
                if error.get("kind") == "timeout":
                    raise httpx_module.ReadTimeout(message, request=request)
                raise httpx_module.ConnectError(message, request=request)
            sent = record.get("request") or {}
            if "body" in sent and json_or_text(request.content.decode("utf-8", "replace")) \
                    != sent["body"]:
                log.warning("llm.replay_request_differs", trader=client.trader,
                            prompt_hash=record.get("prompt_hash"))
            headers = {k: v for k, v in response["headers"].items()
                       if k.lower() not in TRANSFER_HEADERS}
            return httpx_module.Response(response["status"], headers=headers,
                                         content=body_bytes(response["body"]), request=request)

    return ReplayTransport()
