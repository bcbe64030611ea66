"""Decisions benchmark: three LLM traders answering after 0.5, 1.0 and 1.5 s, decided together,
against the slowest trader decided alone through the same path in the same run.

The traders are the real SDK clients (their own aiohttp transport, retries, parsing) talking to
real HTTP servers on 127.0.0.1 (aiohttp, one per provider, in this process), which answer each
request with the provider's hand-written fixture (engine/traders/fixtures) after a real
(wall-clock) delay. So the figure includes the SDKs' transport: connection set-up, request
building, response parsing. The floor is the slowest trader (1.5 s) decided alone, measured back
to back with the concurrent step; `decisions.overhead_ms` is the median of the per-pair
differences (what deciding three at once adds over the slowest answer, in milliseconds: a ratio
would hide 30 ms in the 1.5 s of sleep). The same three asked one after another are shown for
comparison (≈ 2.0 of the slowest). Also times building one
prompt for the default six symbols. Run: `python -m bench.decisions [--quick]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from bench.common import Result, at_most, serve_locally, timer
from engine.bus import Bus
from engine.clock import LiveClock
from engine.logging import configure
from engine.settings import LLMSettings, ProviderSettings
from engine.traders.decide import DecisionStep
from engine.traders.fixtures import (
    context,
    llm_settings,
    load_fixture,
    response_headers,
    snapshot,
    trader,
)
from engine.traders.kinds import make_client
from engine.traders.prompt import build_prompt
from strategies.base import Strategy
from strategies.llm import LLMStrategy

PLAN = (("claude", "anthropic", "claude-sonnet-4-6", "anthropic/tool_call", 0.5),
        ("deepseek", "deepseek", "deepseek-chat", "deepseek/json_mode", 1.0),
        ("gpt-4o", "openai", "gpt-4o", "openai/json_schema", 1.5))
SLOWEST = max(PLAN, key=lambda p: p[-1])
OVERHEAD_TARGET_MS = 5.0  # three traders together over the slowest alone
# The path prefix of each provider's base URL (the SDKs append /messages, /chat/completions).
BASE_PATH = {"anthropic": "", "openai": "/v1", "deepseek": ""}


class FixtureServer:
    """An HTTP server on 127.0.0.1 answering every POST with one fixture after `delay` s."""

    def __init__(self, fixture: str, delay: float) -> None:
        fx = load_fixture(fixture)
        body = fx["response"]["body"]
        self.body = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.status = fx["response"]["status"]
        self.headers = {k: v for k, v in response_headers(fx).items()
                        if k.lower() != "content-type"}
        self.delay = delay
        self.requests = 0
        self.url = ""

    async def _answer(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        await asyncio.sleep(self.delay)  # the provider "thinking": real time, on purpose
        return web.Response(body=self.body, status=self.status, headers=self.headers,
                            content_type="application/json")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FixtureServer]:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._answer)
        runner, port = await serve_locally(app)
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            await runner.cleanup()


def _settings(urls: dict[str, str]) -> LLMSettings:
    base = llm_settings()
    providers = {p: ProviderSettings(base_url=urls[p] + BASE_PATH[p], max_retries=0)
                 for p in urls}
    return base.model_copy(update={"providers": providers})


def _step(plan: tuple[tuple[str, str, str, str, float], ...],
          servers: dict[str, FixtureServer]) -> DecisionStep:
    """Return a decision step over `plan`'s traders, each with its own SDK client, built once
    and kept across rounds as the engine keeps them across cycles."""
    clock = LiveClock()
    settings = _settings({p[1]: servers[p[1]].url for p in plan})
    strategies: dict[str, Strategy] = {}
    for name, provider, model, _, _ in plan:
        client = make_client(provider, settings.providers[provider],  # type: ignore[index]
                             "sk-bench", clock)
        strategies[name] = LLMStrategy(trader(name, provider, model), client, clock, settings,
                                       deadline_seconds=30)
    return DecisionStep(strategies, settings, clock, Bus())


async def _decide(step: DecisionStep, sequential: bool = False) -> float:
    """Decide once for every trader of `step`; return the wall time."""
    contexts = {n: context(n) for n in step.strategies}
    start = timer()
    if sequential:
        outcomes: dict[str, Any] = {}
        for name, ctx in contexts.items():
            outcomes |= await step.decide_all({name: ctx})
    else:
        outcomes = await step.decide_all(contexts)
    elapsed = timer() - start
    assert all(o.valid for o in outcomes.values()), {n: o.error for n, o in outcomes.items()}
    return elapsed


async def _measure(runs: int,
                   scale: float = 1.0) -> tuple[list[float], list[float], list[float], int]:
    async with contextlib.AsyncExitStack() as stack:
        servers = {p[1]: await stack.enter_async_context(
                       FixtureServer(p[3], p[4] * scale).running()) for p in PLAN}
        together_step, alone_step = _step(PLAN, servers), _step((SLOWEST,), servers)
        stack.push_async_callback(together_step.aclose)
        stack.push_async_callback(alone_step.aclose)
        # The warm-up pays the SDKs' one-time first-request cost (lazy imports, platform headers,
        # the connection), as the first cycle of an engine does.
        await _decide(together_step)
        await _decide(alone_step)
        alone, together = [], []
        for _ in range(runs):
            alone.append(await _decide(alone_step))
            together.append(await _decide(together_step))
        apart = [await _decide(together_step, True) for _ in range(max(1, runs // 3))]
        requests = sum(s.requests for s in servers.values())
    return alone, together, apart, requests


def _prompt_us(repeats: int) -> float:
    prices = {"BTCUSDT": 97000.5, "ETHUSDT": 3450.25, "SOLUSDT": 187.123, "BNBUSDT": 690.1,
              "XRPUSDT": 2.345, "DOGEUSDT": 0.3812}
    samples = []
    for _ in range(repeats):
        # A new snapshot each time: the prompt of a cycle's first trader, which makes the market
        # lines the other traders of the cycle then share (engine.traders.prompt).
        ctx = context(snap=snapshot(prices))
        start = timer()
        build_prompt(ctx)
        samples.append((timer() - start) * 1e6)
    return statistics.median(samples)


def run(quick: bool = False, tiny: bool = False) -> list[Result]:
    """Measure the concurrent decision step against the slowest trader alone, same run (`tiny`:
    a smoke pass with a tenth of the delays, figures meaningless)."""
    import uvloop

    configure(level="warning")  # one decision.made line per trader per round is noise here
    runs = 1 if tiny else 3 if quick else 7
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        alone, together, apart, requests = runner.run(_measure(runs, 0.1 if tiny else 1.0))
    overheads = [(t - a) * 1000 for t, a in zip(together, alone, strict=True)]
    overhead = statistics.median(overheads)
    floor = statistics.median(alone)
    prompt_us = _prompt_us(5 if tiny else 50 if quick else 300)
    return [
        Result("decisions.overhead_ms", round(overhead, 2), "ms", f"<= {OVERHEAD_TARGET_MS:g}",
               at_most(overhead, OVERHEAD_TARGET_MS),
               f"traders answering after 0.5/1.0/1.5 s from HTTP servers on 127.0.0.1 (real SDK "
               f"clients and transport, {requests} requests): together "
               f"{statistics.median(together):.4f} s minus the slowest alone {floor:.4f} s; "
               f"per-pair differences {[round(x, 2) for x in overheads]} ms",
               workload=requests),
        Result("decisions.sequential_over_slowest", round(statistics.median(apart) / floor, 3),
               "x", "~2.0 (comparison)", None,
               f"{statistics.median(apart):.3f} s one after another"),
        Result("decisions.prompt_build", round(prompt_us, 1), "us", "", None,
               "one prompt for 6 symbols, a cycle's first (on a new snapshot)"),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.name:36s} {r.value:>10} {r.unit:3s} target {r.target or '-':18s} "
              f"{'' if r.met is None else ('met' if r.met else 'MISSED')} {r.detail}")
