"""The client of each provider kind: anthropic, openai and openai_compatible.

Each asks for structured output in its client's current `mode` (see `engine.traders.providers`)
and reads the answer back the same way, live or from a recorded exchange.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from engine.decision import answer_schema, strict_schema
from engine.llm_settings import NATIVE_PROVIDERS, ProviderSettings
from engine.traders.prompt import ANSWER_TOOL, Prompt
from engine.traders.providers import LLMAnswer, LLMClient, LLMError, Usage
from engine.traders.recorder import FixtureRecorder, replay_transport

if TYPE_CHECKING:
    from engine.clock import Clock


class AnthropicClient(LLMClient):
    """The Messages API: a forced tool call (mode "tool"), or plain text (mode "text")."""

    kind = "anthropic"

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
        tools: dict[str, Any] = {}
        if self.mode == "tool":
            tools = {"tools": [{"name": ANSWER_TOOL,
                                "input_schema": answer_schema(prompt.symbols),
                                "description": "Submit this cycle's trading decision."}],
                     "tool_choice": {"type": "tool", "name": ANSWER_TOOL}}
        api: Any = sdk or self._sdk
        msg = await api.messages.create(
            model=model, max_tokens=max_tokens, extra_body=extra,
            system=[{"type": "text", "text": prompt.system,
                     "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": prompt.user}],
            timeout=request_timeout, **tools,
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
    """Chat completions in any output mode (OpenAI itself: max_completion_tokens)."""

    kind = "openai"
    max_tokens_key = "max_completion_tokens"

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

    def _request(self, max_tokens: int, symbols: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {self.max_tokens_key: max_tokens}
        if self.mode == "json_schema":
            out["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "trading_decision", "strict": True, "schema": strict_schema(symbols)}}
        elif self.mode == "tool":
            out["tools"] = [{"type": "function", "function": {
                "name": ANSWER_TOOL, "description": "Submit this cycle's trading decision.",
                "parameters": answer_schema(symbols)}}]
            out["tool_choice"] = {"type": "function", "function": {"name": ANSWER_TOOL}}
        elif self.mode == "json_object":
            out["response_format"] = {"type": "json_object"}
        return out

    async def _call(self, prompt: Prompt, model: str, temperature: float | None,
                    max_tokens: int, request_timeout: float, sdk: Any = None) -> LLMAnswer:
        sampling = {"temperature": temperature} if temperature is not None else {}
        api: Any = sdk or self._sdk
        resp = await api.chat.completions.create(
            model=model, **sampling,
            messages=[{"role": "system", "content": prompt.system},
                      {"role": "user", "content": prompt.user}],
            timeout=request_timeout, **self._request(max_tokens, prompt.symbols))
        if not resp.choices:
            raise LLMError(f"no choices in the response (id={resp.id})")
        choice = resp.choices[0]
        message = choice.message
        calls = [c.function.arguments for c in (getattr(message, "tool_calls", None) or ())
                 if getattr(c, "function", None) is not None
                 and c.function.name == ANSWER_TOOL]
        text = calls[0] if calls else (message.content or "")
        if not text and getattr(message, "refusal", None):
            raise LLMError(f"refusal: {message.refusal}")
        return LLMAnswer(
            text=text, reasoning=getattr(message, "reasoning_content", None) or "",
            truncated=choice.finish_reason == "length", stop_reason=choice.finish_reason,
            usage=self._usage(resp.usage), request_id=resp._request_id or resp.id,
            model=resp.model or model)

    def _usage(self, u: Any) -> Usage:
        if u is None:
            return Usage()
        hit = getattr(u, "prompt_cache_hit_tokens", None)  # DeepSeek's name for cache reads
        if hit is not None:
            return Usage(input_tokens=(u.prompt_tokens or 0) - hit,
                         output_tokens=u.completion_tokens or 0, cache_read_tokens=hit)
        details = getattr(u, "prompt_tokens_details", None)
        cached = (getattr(details, "cached_tokens", None) or 0) if details else 0
        prompt = u.prompt_tokens or 0
        return Usage(input_tokens=prompt - cached, output_tokens=u.completion_tokens or 0,
                     cache_read_tokens=cached)


class OpenAICompatibleClient(OpenAIClient):
    """Any OpenAI-compatible endpoint (DeepSeek, vLLM, Ollama, ...): `max_tokens`, as they take."""

    kind = "openai_compatible"
    max_tokens_key = "max_tokens"


DeepSeekClient = OpenAICompatibleClient  # DeepSeek is an openai_compatible provider


CLIENTS: dict[str, type[LLMClient]] = {"anthropic": AnthropicClient, "openai": OpenAIClient,
                                       "openai_compatible": OpenAICompatibleClient}


def make_client(provider: str, settings: ProviderSettings | None, api_key: str | None,
                clock: Clock, *, recorder: FixtureRecorder | None = None,
                session: Any = None, trader: str = "") -> LLMClient:
    """Return the client of the provider named `provider` (its kind from `settings`, or
    inferred for anthropic, openai and deepseek).

    Without `api_key` the client answers only through `session` (a recording or the cache).
    """
    native = NATIVE_PROVIDERS.get(provider, {})
    if settings is None:
        settings = ProviderSettings(**native)
    kind = settings.kind or native.get("kind")
    if kind is None:
        raise ValueError(f"provider {provider!r} has no kind")
    if settings.kind is None:
        settings = settings.model_copy(update={"kind": kind})
    return CLIENTS[kind](settings, api_key, clock, recorder=recorder, session=session,
                         trader=trader, name=provider)
