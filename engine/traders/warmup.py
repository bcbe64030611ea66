"""Warming the LLM clients up before the engine says it is ready.

The first call through an SDK does work that blocks the event loop: it imports the SDK's
resource modules (defining hundreds of pydantic models), builds the request and response model
machinery and parses a first answer; for the OpenAI SDK that was 1.5-3.2 s, for Anthropic 0.5 s,
during which ticks, stop-losses and liquidations waited. `warm_up` does all of it once per
provider in a worker thread, before `engine.ready`: a throwaway client of the same class parses a
hand-written fixture answer through the SDK (no network, no API key), so the modules and caches
the live clients share are loaded off the loop. Only traders that have an API key are warmed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import structlog

from engine.clock import LiveClock
from engine.traders.fixtures import load_fixture
from engine.traders.prompt import Prompt

log = structlog.get_logger("decisions")

FIXTURES = {"anthropic": "anthropic/tool_call", "openai": "openai/json_schema",
            "deepseek": "deepseek/json_mode"}
_PROMPT = Prompt(system="warm-up", user="warm-up", hash="warm-up")


def _warm(client: Any, model: str) -> None:
    """Parse one fixture answer through a fresh client of `client`'s class (runs in a thread)."""
    record = dict(load_fixture(FIXTURES[client.provider]))
    record["request"] = {}  # nothing to compare the warm-up request against

    async def go() -> None:
        spare = type(client)(client.settings, None, LiveClock(), trader=client.trader)
        try:
            await spare.serve(record, _PROMPT, model=model, temperature=None, max_tokens=64,
                              deadline_seconds=30.0)
        finally:
            await spare.aclose()

    asyncio.run(go())
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
