"""Costs before spending: a backtest's estimated LLM calls, tokens and USD per trader, and the ask.

Calls = the trading cycles in the window (the `trading_cycle` job's interval). Input tokens per
call = the trader's prompt (its own template, the window's symbols) at 4 characters a token.
Output tokens per call = the trader's `max_tokens`, so the USD figure is an upper bound. Prices
are `[llm.prices."<model>"]`; a model without a price shows "?".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from engine.settings import Secrets, Settings

CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class CostRow:
    trader: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    usd: float | None  # None: no price configured


def cycles_in(settings: Settings, start: float, end: float) -> int:
    """Return how many trading cycles fire in [start, end)."""
    jobs = [j for j in settings.jobs if j.run == "trading_cycle" and j.enabled
            and j.schedule == "interval" and j.interval_seconds]
    if not jobs:
        return 0
    step = jobs[0].interval_seconds or 300.0
    first = -(-start // step) * step
    return max(0, int((end - first - 1e-9) // step) + 1) if end > first else 0


def estimate(settings: Settings, start: float, end: float, *, live: bool,
             secrets: Secrets) -> list[CostRow]:
    """Return the cost estimate of every LLM trader that would call an API."""
    from engine.traders.fixtures import context, snapshot
    from engine.traders.prompt import build_prompt, load_template

    if not live:
        return []
    calls = cycles_in(settings, start, end)
    snap = snapshot({s: 100.0 for s in settings.feed.symbols})
    rows = []
    for t in settings.traders:
        provider = settings.llm.providers.get(t.provider or "")
        if (t.strategy != "llm" or not t.enabled or provider is None
                or not secrets.api_key(t.provider or "", provider.api_key_env)):
            continue
        prompt = build_prompt(context(t.name, snap=snap), load_template(t.prompt_template))
        tokens_in = (len(prompt.system) + len(prompt.user)) // CHARS_PER_TOKEN
        price = settings.llm.prices.get(t.model or "")
        usd = None
        if price is not None:
            usd = calls * (tokens_in * price.input + t.max_tokens * price.output) / 1e6
        rows.append(CostRow(t.name, t.model or "", calls, calls * tokens_in,
                            calls * t.max_tokens, usd))
    return rows


def render(rows: list[CostRow]) -> str:
    """Return the estimate as a small text table."""
    lines = [f"{'trader':<14} {'model':<20} {'calls':>6} {'input tok':>11} {'output tok':>11}"
             f" {'USD (max)':>10}"]
    for r in rows:
        usd = "?" if r.usd is None else f"{r.usd:,.2f}"
        lines.append(f"{r.trader:<14} {r.model:<20} {r.calls:>6} {r.input_tokens:>11,}"
                     f" {r.output_tokens:>11,} {usd:>10}")
    total = sum(r.usd or 0.0 for r in rows)
    lines.append(f"total at most {total:,.2f} USD (output counted at max_tokens; 4 chars a token)")
    return "\n".join(lines)


def confirm(rows: list[CostRow], *, live: bool, assume_yes: bool, stdin: TextIO) -> bool:
    """Print the estimate and ask before the first paid call; True to go on."""
    if not live:
        print("backtest: no --live-llm: LLM traders answer from the answer cache or hold "
              "(not_recorded); nothing is spent", flush=True)
        return True
    if not rows:
        print("backtest: --live-llm, but no LLM trader has an API key: nothing is spent",
              flush=True)
        return True
    print("backtest: estimated LLM use before any call:\n" + render(rows), flush=True)
    if assume_yes:
        return True
    print("Proceed and call the APIs? [y/N] ", end="", flush=True)
    answer = stdin.readline().strip().lower()
    return answer in ("y", "yes")
