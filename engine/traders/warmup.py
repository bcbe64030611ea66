"""Warming the LLM clients up before the engine says it is ready.

The first call through an SDK does work that blocks the event loop: it imports the SDK's
resource modules (defining hundreds of pydantic models), builds the request and response model
machinery and parses a first answer; for the OpenAI SDK that was 1.5-3.2 s, for Anthropic 0.5 s,
during which ticks, stop-losses and liquidations waited. `warm_up` does all of it once per
provider in a worker thread, before `engine.ready`: a throwaway client of the same class parses a
hand-written fixture answer through the SDK (no network, no API key), so the modules and caches
the live clients share are loaded off the loop. Only traders that have an API key are warmed.

`prewarm` does the same from the settings alone, once per client class, before the traders exist:
the engine starts it first thing, so it runs while the database starts, and `warm_up` later finds
each SDK warm (a few milliseconds instead of most of a second, measured here).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import structlog

from engine.clock import LiveClock
from engine.llm_settings import NATIVE_PROVIDERS, ProviderSettings
from engine.traders.fixtures import load_fixture
from engine.traders.prompt import Prompt

log = structlog.get_logger("decisions")

FIXTURES = {"anthropic": "anthropic/tool_call", "openai": "openai/json_schema",
            "deepseek": "deepseek/json_mode"}
# The fixture each provider kind's client parses (an openai_compatible one asks in JSON mode).
KIND_FIXTURES = {"anthropic": "anthropic/tool_call", "openai": "openai/json_schema",
                 "openai_compatible": "deepseek/json_mode"}
_PROMPT = Prompt(system="warm-up", user="warm-up", hash="warm-up")


def _serve_fixture(make_spare: Callable[[], Any], fixture: str, model: str) -> None:
    """Parse one fixture answer through a throwaway client (runs in a thread)."""
    record = dict(load_fixture(fixture))
    record["request"] = {}  # nothing to compare the warm-up request against

    async def go() -> None:
        spare = make_spare()
        try:
            await spare.serve(record, _PROMPT, model=model, temperature=None, max_tokens=64,
                              deadline_seconds=30.0)
        finally:
            await spare.aclose()

    asyncio.run(go())


def _warm(client: Any, model: str) -> None:
    """Parse one fixture answer through a fresh client of `client`'s class (runs in a thread)."""
    _serve_fixture(lambda: type(client)(client.settings, None, LiveClock(), trader=client.trader),
                   FIXTURES[client.provider], model)
    live = getattr(client, "_sdk", None)
    for name in ("messages", "chat"):  # the live SDK's resources (cached properties)
        getattr(live, name, None)


async def warm_up(strategies: Mapping[str, Any]) -> dict[str, float]:
    """Warm every provider used by a trader with an API key; return seconds per provider."""
    chosen: dict[str, tuple[Any, str]] = {}
    for strategy in strategies.values():
        client = getattr(strategy, "_client", None)
        if client is not None and getattr(client, "live", False) \
                and client.provider in FIXTURES:
            chosen.setdefault(client.provider, (client, strategy.model))
    took: dict[str, float] = {}
    for provider, (client, model) in chosen.items():
        started = time.perf_counter()
        try:
            await asyncio.to_thread(_warm, client, model)
        except Exception as exc:  # a failed warm-up only costs the first call its time
            log.warning("llm.warm_up_failed", provider=provider,
                        error=f"{type(exc).__name__}: {exc}")
            continue
        took[provider] = round(time.perf_counter() - started, 3)
    if took:
        log.info("llm.warmed_up", seconds=took)
    return took


def _spare(name: str, settings: ProviderSettings | None) -> Any:
    """A keyless client of the provider `name` (built in the warm-up thread)."""
    from engine.traders.kinds import make_client

    return make_client(name, settings, None, LiveClock(), trader="warm-up")


async def prewarm(providers: Mapping[str, tuple[ProviderSettings | None, str]]) -> dict[str, float]:
    """Warm the client class of each provider (name → (its settings, a model)) once, from the
    settings alone; return seconds per provider kind. A failure only costs `warm_up` its time."""
    took: dict[str, float] = {}
    for name, (settings, model) in providers.items():
        # the kind from the settings, not from a client: building one imports its SDK, which
        # belongs in the thread
        kind = (settings.kind if settings is not None else None) \
            or NATIVE_PROVIDERS.get(name, {}).get("kind")
        if kind not in KIND_FIXTURES or kind in took:
            continue  # a provider without a kind: the settings check reports it
        started = time.perf_counter()
        try:
            await asyncio.to_thread(_serve_fixture, partial(_spare, name, settings),
                                    KIND_FIXTURES[kind], model)
        except Exception as exc:
            log.warning("llm.prewarm_failed", provider=name, error=f"{type(exc).__name__}: {exc}")
            continue
        took[kind] = round(time.perf_counter() - started, 3)
    if took:
        log.debug("llm.prewarmed", seconds=took)
    return took
