"""Decisions benchmark: three LLM traders answering after 0.5, 1.0 and 1.5 s decide together
in about the slowest one's time; the same three asked one after another take the sum.

The traders are the real SDK clients over aiohttp, served the recorded fixtures of
tests/data/llm by aioresponses after a real (wall-clock) delay. Also times building one prompt
for the default six symbols. Run: `python -m bench.decisions [--quick]`.
"""

from __future__ import annotations

import asyncio
import statistics
import sys

from aioresponses import aioresponses

from bench.common import Result, at_most, median_of, timer
from engine.bus import Bus
from engine.clock import LiveClock
from engine.logging import configure
from engine.traders.decide import DecisionStep
from engine.traders.fixtures import context, llm_settings, register_fixture, snapshot, trader
from engine.traders.prompt import build_prompt
from engine.traders.providers import make_client
from strategies.llm import LLMStrategy

PLAN = (("claude", "anthropic", "claude-sonnet-4-6", "anthropic/tool_call", 0.5),
        ("deepseek", "deepseek", "deepseek-chat", "deepseek/json_mode", 1.0),
        ("gpt-4o", "openai", "gpt-4o", "openai/json_schema", 1.5))
SLOWEST = max(p[-1] for p in PLAN)


def _delay(seconds: float):
    async def delay() -> None:
        await asyncio.sleep(seconds)  # the provider "thinking": real time, on purpose
    return delay


async def _round(sequential: bool) -> float:
    clock, settings = LiveClock(), llm_settings()
    strategies = {}
    with aioresponses() as mocked:
        for name, provider, model, fixture, seconds in PLAN:
            register_fixture(mocked, fixture, delay=_delay(seconds), repeat=True)
            client = make_client(provider, settings.providers[provider], "sk-bench", clock)
            strategies[name] = LLMStrategy(trader(name, provider, model), client, clock,
                                           settings, deadline_seconds=30)
        step = DecisionStep(strategies, settings, clock, Bus())
        contexts = {n: context(n) for n in strategies}
        try:
            start = timer()
            if sequential:
                outcomes = {}
                for name, ctx in contexts.items():
                    outcomes |= await step.decide_all({name: ctx})
            else:
                outcomes = await step.decide_all(contexts)
            elapsed = timer() - start
        finally:
            await step.aclose()
    assert all(o.valid for o in outcomes.values()), {n: o.error for n, o in outcomes.items()}
    return elapsed


def _prompt_us(repeats: int) -> float:
    prices = {"BTCUSDT": 97000.5, "ETHUSDT": 3450.25, "SOLUSDT": 187.123, "BNBUSDT": 690.1,
              "XRPUSDT": 2.345, "DOGEUSDT": 0.3812}
    ctx = context(snap=snapshot(prices))
    samples = []
    for _ in range(repeats):
        start = timer()
        build_prompt(ctx)
        samples.append((timer() - start) * 1e6)
    return statistics.median(samples)


def run(quick: bool = False) -> list[Result]:
    """Measure the concurrent decision step against the slowest trader and the sequential sum."""
    configure(level="warning")  # one decision.made line per trader per round is noise here
    runs = 1 if quick else 5
    # The warm-up pays the SDKs' one-time first-request cost (lazy imports, platform headers).
    together, values = median_of(lambda: asyncio.run(_round(False)), runs=runs, warmup=1)
    apart, _ = median_of(lambda: asyncio.run(_round(True)), runs=max(1, runs // 2), warmup=0)
    ratio = together / SLOWEST
    runs_text = [round(v, 3) for v in values]
    prompt_us = _prompt_us(50 if quick else 300)
    return [
        Result("decisions.concurrent_over_slowest", round(ratio, 3), "x", "<= 1.05",
               at_most(ratio, 1.05),
               f"{together:.3f}s for traders of 0.5/1.0/1.5 s; runs {runs_text}"),
        Result("decisions.sequential_over_slowest", round(apart / SLOWEST, 3), "x",
               "~2.0 (comparison)", None, f"{apart:.3f}s one after another"),
        Result("decisions.prompt_build", round(prompt_us, 1), "us", "", None,
               "one prompt for 6 symbols"),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.name:36s} {r.value:>10} {r.unit:3s} target {r.target or '-':18s} "
              f"{'' if r.met is None else ('met' if r.met else 'MISSED')} {r.detail}")
