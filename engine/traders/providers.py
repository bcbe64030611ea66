"""LLM provider clients over aiohttp: structured-output requests, usage, cost, fixture recording.

Each provider is asked for structured output the way it supports best: Anthropic with a forced
tool call, OpenAI with a strict `json_schema` response format, DeepSeek (OpenAI-compatible API)
with JSON mode. The official SDKs do the HTTP (over aiohttp, `DefaultAioHttpClient`) and their
own retries of 408/409/429/5xx/529 honouring `retry-after`; a response hook stops a retry whose
`retry-after` would end past the trader's deadline, so the call fails at once with that reason.
Every failure becomes `LLMError` whose message is the exact reason. With an
`engine.traders.session.LLMSession` a call may instead be answered from a recording or the answer
cache, through a second SDK object whose HTTP transport serves the stored response, so every
answer is parsed by the same SDK code.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from engine.redact import redact
from engine.settings import ModelPrice, ProviderSettings
from engine.traders.prompt import ANSWER_SCHEMA, ANSWER_TOOL, Prompt
from engine.traders.recorder import FixtureRecorder, exchange_of, replay_transport

if TYPE_CHECKING:
    from engine.clock import Clock

__all__ = ["FixtureRecorder", "exchange_of"]  # kept importable from here

log = structlog.get_logger("llm")

DEFAULT_BASE_URLS = {"anthropic": "https://api.anthropic.com",
                     "openai": "https://api.openai.com/v1",
                     "deepseek": "https://api.deepseek.com"}
_TRANSIENT = {408, 409, 429}


class LLMError(Exception):
    """A call that returned no answer; the message is the exact reason.

    `latency_ms` is set when the time the failure took is known from a recording (replays).
    """

    def __init__(self, message: str, *, latency_ms: float | None = None) -> None:
        super().__init__(message)
        self.latency_ms = latency_ms


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call; `input_tokens` excludes cache reads and writes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True, slots=True)
class LLMAnswer:
    text: str  # the structured answer: the tool call's input as JSON, or the message content
    reasoning: str  # DeepSeek's reasoning_content, if any
    truncated: bool
    stop_reason: str | None
    usage: Usage
    request_id: str | None
    model: str
    latency_ms: float | None = None  # set by a session: wall time live, the recorded one replayed
    source: str = "live"  # live | replay | cache


def cost_usd(price: ModelPrice | None, usage: Usage) -> float:
    """Return the cost of `usage` at `price` (USD per million tokens); 0 without a price."""
    if price is None:
        return 0.0
    total = (usage.input_tokens * price.input + usage.output_tokens * price.output
             + usage.cache_read_tokens * price.cache_read
             + usage.cache_write_tokens * price.cache_write)
    return round(total / 1_000_000, 8)


def retry_after_seconds(headers: Any) -> float | None:
    """Return the wait a response asks for (retry-after-ms, retry-after seconds or date)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) / scale
        except ValueError:
            return None  # an HTTP date: left to the SDK (only the clock reads the time)
    return None


class LLMClient:
    """One provider connection for one trader; one call at a time."""

    provider = ""

    def __init__(self, settings: ProviderSettings, api_key: str | None, clock: Clock, *,
                 recorder: FixtureRecorder | None = None, session: Any = None,
                 trader: str = "") -> None:
        self.settings = settings
        self.trader = trader
        self.live = bool(api_key)  # False: answers only from a recording or the cache
        self._clock = clock
        self._deadline_at = math.inf
        self._gave_up: str | None = None
        self._session = session
        self.serving: dict[str, Any] | None = None  # the record the replay transport serves
        self.captured: dict[str, Any] | None = None  # the last live exchange (for a session)
        self.attempts = 0
        hooks: list[Any] = [recorder.on_response] if recorder else []
        if session is not None:
            hooks.append(self._capture)
        hooks.append(self._cap_retry)
        self._sdk = (self._make_sdk(api_key, self._http_client({"response": hooks}),
                                    settings.max_retries) if api_key else None)
        self._replay_sdk: Any = None

    def _make_sdk(self, api_key: str, http_client: Any, max_retries: int) -> Any:
        raise NotImplementedError

    def _http_client(self, hooks: dict[str, list[Any]]) -> Any:
        raise NotImplementedError

    def _replay_http_client(self) -> Any:
        """Return an HTTP client whose transport serves `self.serving` (no network)."""
        raise NotImplementedError

    @property
    def gave_up(self) -> str | None:
        """Why the last live call stopped retrying early (a retry-after past the deadline)."""
        return self._gave_up

    async def complete(self, prompt: Prompt, *, model: str, temperature: float | None,
                       max_tokens: int, deadline_seconds: float) -> LLMAnswer:
        """Ask the model, or the session (an `engine.traders.session.LLMSession`: recording,
        cache, API); raise LLMError with the exact reason when no answer comes back."""
        if self._session is not None:
            return await self._session.complete(
                self, prompt, model=model, temperature=temperature, max_tokens=max_tokens,
                deadline_seconds=deadline_seconds)
        return await self.ask_live(prompt, model=model, temperature=temperature,
                                   max_tokens=max_tokens, deadline_seconds=deadline_seconds)

    def begin_capture(self) -> None:
        """Forget the last captured exchange (a session records the next call's)."""
        self.captured, self.attempts = None, 0

    async def _capture(self, response: Any) -> None:
        await response.aread()
        self.attempts += 1
        self.captured = exchange_of(self.provider, response)

    async def serve(self, record: dict[str, Any], prompt: Prompt, *, model: str,
                    temperature: float | None, max_tokens: int,
                    deadline_seconds: float) -> LLMAnswer:
        """Parse a recorded exchange with the SDK, as if the API had just sent it."""
        if self._replay_sdk is None:
            self._replay_sdk = self._make_sdk("replay-no-key", self._replay_http_client(), 0)
        self.serving, self._gave_up = record, record.get("gave_up")
        try:
            return await self._call(prompt, model, temperature, max_tokens,
                                    request_timeout=deadline_seconds, sdk=self._replay_sdk)
        except _sdk_errors("APIError") as exc:
            raise LLMError(describe_error(exc, self._gave_up)) from exc
        finally:
            self.serving = None

    async def ask_live(self, prompt: Prompt, *, model: str, temperature: float | None,
                       max_tokens: int, deadline_seconds: float) -> LLMAnswer:
        """Ask the real API; raise LLMError with the exact reason when no answer comes back."""
        if self._sdk is None:
            raise LLMError(f"no API key for {self.provider}")
        now = self._clock.monotonic()
        self._deadline_at = now + deadline_seconds
        self._gave_up = None
        try:
            return await self._call(prompt, model, temperature, max_tokens,
                                    request_timeout=deadline_seconds)
        except asyncio.CancelledError:
            raise
        except _sdk_errors("APIError") as exc:
            raise LLMError(describe_error(exc, self._gave_up)) from exc

    async def _call(self, prompt: Prompt, model: str, temperature: float | None,
                    max_tokens: int, request_timeout: float, sdk: Any = None) -> LLMAnswer:
        raise NotImplementedError

    async def _cap_retry(self, response: Any) -> None:
        status = response.status_code
        if status not in _TRANSIENT and status < 500:
            return
        wait = retry_after_seconds(response.headers)
        left = self._deadline_at - self._clock.monotonic()
        if wait is not None and wait > left:
            # The SDK obeys x-should-retry: giving up now beats sleeping past the deadline.
            response.headers["x-should-retry"] = "false"
            self._gave_up = (f"retry-after {wait:g}s exceeds the {max(left, 0):.1f}s left "
                             "before the deadline")

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        for sdk in (self._sdk, self._replay_sdk):
            if sdk is not None:
                await sdk.close()


class AnthropicClient(LLMClient):
    provider = "anthropic"

    def _make_sdk(self, api_key: str, http_client: Any, max_retries: int) -> Any:
        import anthropic  # the SDK is imported only when a client of it is made

        return anthropic.AsyncAnthropic(api_key=api_key, base_url=self.settings.base_url,
                                        max_retries=max_retries, http_client=http_client)

    def _http_client(self, hooks: dict[str, list[Any]]) -> Any:
        import anthropic

        return anthropic.DefaultAioHttpClient(event_hooks=hooks)

    def _replay_http_client(self) -> Any:
        import anthropic
        import httpx2  # the Anthropic SDK's own httpx

        return anthropic.DefaultAsyncHttpxClient(transport=replay_transport(httpx2, self))

    async def _call(self, prompt: Prompt, model: str, temperature: float | None,
                    max_tokens: int, request_timeout: float, sdk: Any = None) -> LLMAnswer:
        # SDK 1.x+ dropped `temperature` from the signature; the API still takes it in the body.
        extra = {"temperature": temperature} if temperature is not None else None
        msg = await (sdk or self._sdk).messages.create(
            model=model, max_tokens=max_tokens, extra_body=extra,
            system=[{"type": "text", "text": prompt.system,
                     "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": prompt.user}],
            tools=[{"name": ANSWER_TOOL, "input_schema": ANSWER_SCHEMA,
                    "description": "Submit this cycle's trading decision."}],
            tool_choice={"type": "tool", "name": ANSWER_TOOL},
            timeout=request_timeout,
        )
        tool_inputs = [b.input for b in msg.content
                       if b.type == "tool_use" and b.name == ANSWER_TOOL]
        if tool_inputs:
            text = json.dumps(tool_inputs[0], ensure_ascii=False)
        else:
            text = "".join(b.text for b in msg.content if b.type == "text")
        u = msg.usage
        return LLMAnswer(
            text=text, reasoning="", truncated=msg.stop_reason == "max_tokens",
            stop_reason=msg.stop_reason,
            usage=Usage(input_tokens=u.input_tokens or 0, output_tokens=u.output_tokens or 0,
                        cache_read_tokens=u.cache_read_input_tokens or 0,
                        cache_write_tokens=u.cache_creation_input_tokens or 0),
            request_id=msg._request_id or msg.id, model=msg.model)


class OpenAIClient(LLMClient):
    """OpenAI chat completions with a strict json_schema (or JSON mode for DeepSeek)."""

    provider = "openai"
    def _make_sdk(self, api_key: str, http_client: Any, max_retries: int) -> Any:
        import openai  # the SDK is imported only when a client of it is made

        return openai.AsyncOpenAI(api_key=api_key, base_url=self.settings.base_url,
                                  max_retries=max_retries, http_client=http_client)

    def _http_client(self, hooks: dict[str, list[Any]]) -> Any:
        import openai

        return openai.DefaultAioHttpClient(event_hooks=hooks)

    def _replay_http_client(self) -> Any:
        import httpx
        import openai

        return openai.DefaultAsyncHttpxClient(transport=replay_transport(httpx, self))

    def _request(self, max_tokens: int) -> dict[str, Any]:
        return {"max_completion_tokens": max_tokens,
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "trading_decision", "strict": True, "schema": ANSWER_SCHEMA}}}

    async def _call(self, prompt: Prompt, model: str, temperature: float | None,
                    max_tokens: int, request_timeout: float, sdk: Any = None) -> LLMAnswer:
        sampling = {"temperature": temperature} if temperature is not None else {}
        resp = await (sdk or self._sdk).chat.completions.create(
            model=model, **sampling,
            messages=[{"role": "system", "content": prompt.system},
                      {"role": "user", "content": prompt.user}],
            timeout=request_timeout, **self._request(max_tokens))
        if not resp.choices:
            raise LLMError(f"no choices in the response (id={resp.id})")
        choice = resp.choices[0]
        message = choice.message
        text = message.content or ""
        if not text and getattr(message, "refusal", None):
            raise LLMError(f"refusal: {message.refusal}")
        return LLMAnswer(
            text=text, reasoning=getattr(message, "reasoning_content", None) or "",
            truncated=choice.finish_reason == "length", stop_reason=choice.finish_reason,
            usage=self._usage(resp.usage), request_id=resp._request_id or resp.id,
            model=resp.model)

    def _usage(self, u: Any) -> Usage:
        if u is None:
            return Usage()
        details = getattr(u, "prompt_tokens_details", None)
        cached = (getattr(details, "cached_tokens", None) or 0) if details else 0
        prompt = u.prompt_tokens or 0
        return Usage(input_tokens=prompt - cached, output_tokens=u.completion_tokens or 0,
                     cache_read_tokens=cached)


class DeepSeekClient(OpenAIClient):
    provider = "deepseek"

    def _request(self, max_tokens: int) -> dict[str, Any]:
        return {"max_tokens": max_tokens, "response_format": {"type": "json_object"}}

    def _usage(self, u: Any) -> Usage:
        if u is None:
            return Usage()
        hit = getattr(u, "prompt_cache_hit_tokens", None)
        if hit is None:
            return super()._usage(u)
        return Usage(input_tokens=(u.prompt_tokens or 0) - hit,
                     output_tokens=u.completion_tokens or 0, cache_read_tokens=hit)


CLIENTS: dict[str, type[LLMClient]] = {"anthropic": AnthropicClient, "openai": OpenAIClient,
                                       "deepseek": DeepSeekClient}


def make_client(provider: str, settings: ProviderSettings | None, api_key: str | None,
                clock: Clock, *, recorder: FixtureRecorder | None = None,
                session: Any = None, trader: str = "") -> LLMClient:
    """Return the client of `provider` (anthropic, openai or deepseek).

    Without `api_key` the client answers only through `session` (a recording or the cache).
    """
    settings = settings or ProviderSettings(base_url=DEFAULT_BASE_URLS[provider])
    return CLIENTS[provider](settings, api_key, clock, recorder=recorder, session=session,
                             trader=trader)


def _sdk_errors(name: str) -> tuple[type[BaseException], ...]:
    """Return the exception class `name` of each LLM SDK already imported (none: nothing to
    catch; an SDK that was never imported raised nothing)."""
    return tuple(getattr(sys.modules[m], name) for m in ("anthropic", "openai")
                 if m in sys.modules)


def describe_error(exc: BaseException, gave_up: str | None = None) -> str:
    """Return the exact reason of an SDK failure in one line, redacted (`engine.redact`): a
    provider's error that echoes the key it was given (a 401's "Incorrect API key provided:
    sk-...") never carries it into an event, a row, a recording, an alert or an API answer."""
    return redact(_reason(exc, gave_up))


def _reason(exc: BaseException, gave_up: str | None) -> str:
    if isinstance(exc, _sdk_errors("APITimeoutError")):
        return "timeout: the provider did not answer in time (SDK timeout)"
    if isinstance(exc, _sdk_errors("APIStatusError")):
        body = exc.body if isinstance(exc.body, dict) else {}
        err = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        kind = err.get("type") or err.get("code") or "error"
        message = err.get("message") or str(exc)
        text = (f"http {exc.status_code} {kind}: {message} "
                f"(request_id={getattr(exc, 'request_id', None)})")
        return f"{text}; {gave_up}" if gave_up else text
    if isinstance(exc, _sdk_errors("APIConnectionError")):
        return f"connection error: {exc.__cause__ or exc}"
    return f"{type(exc).__name__}: {exc}"
