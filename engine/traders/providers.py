"""LLM provider clients over aiohttp: structured-output requests, usage, cost, fixture recording.

A provider is one `[llm.providers.NAME]` entry of a kind: `anthropic` (the Messages API),
`openai` or `openai_compatible` (chat completions: DeepSeek, Qwen, Grok, Gemini, Kimi, a local
vLLM or Ollama...). Structured output is asked for in one of the modes of `OUTPUT_MODES`, most to
least strict: a strict `json_schema` response format, a forced tool (function) call, JSON mode
(`json_object`), or plain text read by the tolerant parser. With `structured_output = "auto"`
the client starts at its kind's first mode and, when the endpoint refuses a mode (an HTTP 400,
404, 422 or 501 naming the feature), logs `llm.output_mode_learned` and asks again at once in the
next mode, which it keeps. The mode of a call is part of its recorded parameters (see
`output_param`), so replays and the answer cache serve the mode that was asked. The official SDKs
do the HTTP (over aiohttp, `DefaultAioHttpClient`) and their
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

from engine.llm_settings import NATIVE_PROVIDERS, OUTPUT_MODES, ModelPrice, ProviderSettings
from engine.redact import redact
from engine.traders.prompt import Prompt
from engine.traders.recorder import FixtureRecorder, exchange_of

if TYPE_CHECKING:
    from engine.clock import Clock

__all__ = ["FixtureRecorder", "exchange_of"]  # kept importable from here

log = structlog.get_logger("llm")

DEFAULT_BASE_URLS = {name: p["base_url"] for name, p in NATIVE_PROVIDERS.items()}
_TRANSIENT = {408, 409, 429}
# An endpoint refusing an output mode answers one of these statuses naming the feature.
_UNSUPPORTED_STATUS = {400, 404, 422, 501}
_FEATURE_WORDS = ("response_format", "json_schema", "json_object", "tool", "function",
                  "structured")


class LLMError(Exception):
    """A call that returned no answer; the message is the exact reason.

    `latency_ms` is set when the time the failure took is known from a recording (replays).
    """

    def __init__(self, message: str, *, latency_ms: float | None = None,
                 unsupported_mode: bool = False) -> None:
        super().__init__(message)
        self.latency_ms = latency_ms
        self.unsupported_mode = unsupported_mode  # the endpoint refused the output mode


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
    model: str  # the exact model version the API answered with (e.g. a dated snapshot)
    latency_ms: float | None = None  # set by a session: wall time live, the recorded one replayed
    source: str = "live"  # live | replay | cache


def default_mode(name: str, kind: str) -> str:
    """Return the output mode a provider of this name and kind asks in unless set otherwise."""
    native = NATIVE_PROVIDERS.get(name, {})
    if native.get("kind") == kind and "structured_output" in native:
        return str(native["structured_output"])
    return OUTPUT_MODES[kind][0]


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

    kind = ""

    def __init__(self, settings: ProviderSettings, api_key: str | None, clock: Clock, *,
                 recorder: FixtureRecorder | None = None, session: Any = None,
                 trader: str = "", name: str | None = None) -> None:
        self.settings = settings
        self.provider = name or self.kind  # the provider's name in settings
        self.trader = trader
        self.live = bool(api_key)  # False: answers only from a recording or the cache
        configured = settings.structured_output
        ladder = OUTPUT_MODES[self.kind]
        self._default_mode = default_mode(self.provider, self.kind)
        start = self._default_mode if configured == "auto" else configured
        # "auto" may step down from the start; a set mode is the only one tried
        self._modes = ladder[ladder.index(start):] if configured == "auto" else (start,)
        self.mode = start
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

    @property
    def output_param(self) -> str | None:
        """Return the output mode as a recorded call parameter: None for the provider's default
        mode (so recordings made before modes were recorded keep their keys)."""
        return None if self.mode == self._default_mode else self.mode

    async def complete(self, prompt: Prompt, *, model: str, temperature: float | None,
                       max_tokens: int, deadline_seconds: float) -> LLMAnswer:
        """Ask the model, or the session (an `engine.traders.session.LLMSession`: recording,
        cache, API); raise LLMError with the exact reason when no answer comes back.

        An output mode the endpoint refuses is replaced by the next one (with "auto") and the
        call is made again at once; the learned mode is kept for every later call.
        """
        while True:
            try:
                if self._session is not None:
                    return await self._session.complete(  # type: ignore[no-any-return]
                        self, prompt, model=model, temperature=temperature,
                        max_tokens=max_tokens, deadline_seconds=deadline_seconds)
                return await self.ask_live(prompt, model=model, temperature=temperature,
                                           max_tokens=max_tokens,
                                           deadline_seconds=deadline_seconds)
            except LLMError as exc:
                if not exc.unsupported_mode or not self._step_down(str(exc), model):
                    raise

    def _step_down(self, reason: str, model: str) -> bool:
        """Move to the next output mode; False when there is none (or the mode is fixed)."""
        i = self._modes.index(self.mode)
        if i + 1 >= len(self._modes):
            return False
        old, self.mode = self.mode, self._modes[i + 1]
        log.warning("llm.output_mode_learned", provider=self.provider, trader=self.trader,
                    model=model, refused=old, mode=self.mode, reason=reason)
        return True

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
            raise self._error(exc) from exc
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
            raise self._error(exc) from exc

    def _error(self, exc: BaseException) -> LLMError:
        """Return the LLMError of an SDK failure, marked when it refuses the output mode."""
        _keep_request_id(exc)
        status = getattr(exc, "status_code", None)
        text = json.dumps(getattr(exc, "body", None) or str(exc), default=str).lower()
        unsupported = (status in _UNSUPPORTED_STATUS and self.mode != "text"
                       and any(w in text for w in _FEATURE_WORDS))
        return LLMError(describe_error(exc, self._gave_up), unsupported_mode=unsupported)

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


def _keep_request_id(exc: BaseException) -> None:
    """Take the request id from an error body when the SDK did not (Anthropic puts it there)."""
    if getattr(exc, "request_id", None) or not hasattr(exc, "body"):
        return
    body = exc.body
    rid = body.get("request_id") if isinstance(body, dict) else None
    if isinstance(rid, str) and rid:
        setattr(exc, "request_id", rid)  # noqa: B010 - an SDK error object, not ours


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
        status: Any = exc  # the SDKs' APIStatusError: .body, .status_code, .request_id
        body = status.body if isinstance(status.body, dict) else {}
        err = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        kind = err.get("type") or err.get("code") or "error"
        message = err.get("message") or str(exc)
        text = (f"http {status.status_code} {kind}: {message} "
                f"(request_id={getattr(exc, 'request_id', None)})")
        return f"{text}; {gave_up}" if gave_up else text
    if isinstance(exc, _sdk_errors("APIConnectionError")):
        return f"connection error: {exc.__cause__ or exc}"
    return f"{type(exc).__name__}: {exc}"
