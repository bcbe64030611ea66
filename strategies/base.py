"""The strategy interface: one async `decide(ctx)` taking one context object, and the registry.

A strategy gets everything it may look at in a `TraderContext` (new inputs go on the context or
in `ctx.extra`, never as new parameters; `extra["refusals"]` holds last cycle's refused
actions) and returns a `DecisionOutcome`: the decision plus the
raw answer, validity and the cost of getting it. Rule-based strategies register a factory under
their name with `@register("name")`; `strategies.registry.build_strategies` makes one strategy
per enabled trader.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import structlog

from engine.decision import Decision
from engine.settings import RiskSettings, Settings, TraderSettings

log = structlog.get_logger("decisions")


@dataclass(frozen=True, slots=True)
class TraderContext:
    """Everything one trader may look at when it decides in one cycle."""

    trader: str
    cycle_id: str
    now: float
    snapshot: Any  # a MarketSnapshot (engine.market.snapshot), the same for every trader
    account: Mapping[str, Any]
    positions: tuple[Mapping[str, Any], ...]
    recent_fills: tuple[Mapping[str, Any], ...]
    previous_decisions: tuple[Mapping[str, Any], ...]
    risk: RiskSettings
    extra: Mapping[str, Any] = field(default_factory=dict)
    # The costs and symbol filters the broker applies (engine.traders.prompt.trading_terms):
    # taker fee, slippage, funding interval, per symbol min notional, step and tick size.
    terms: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """One trader's decision in one cycle, with the raw answer and what it cost.

    `input_tokens` counts uncached input tokens (billed at the full input price); cache reads and
    cache writes are counted apart. `skipped` names why no decision was asked for (a cool-down).
    """

    decision: Decision
    raw_answer: str
    valid: bool
    error: str | None
    provider: str
    model: str
    prompt_hash: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    request_id: str | None = None
    skipped: str | None = None
    model_version: str | None = None  # the exact model the API answered with


@runtime_checkable
class Strategy(Protocol):
    """Decides for one trader. Optional attributes: provider, model, timeout_seconds, aclose()."""

    name: str

    async def decide(self, ctx: TraderContext) -> DecisionOutcome: ...


def rule_outcome(decision: Decision, strategy: str, explanation: str = "") -> DecisionOutcome:
    """Return the outcome of a rule-based strategy (no provider, no cost)."""
    return DecisionOutcome(decision=decision, raw_answer=explanation, valid=True, error=None,
                           provider="rule", model=strategy, prompt_hash="")


Factory = Callable[[TraderSettings, Settings], Strategy]
_REGISTRY: dict[str, Factory] = {}
# Modules imported by `build_strategies` so their `@register` runs; add new baselines here.
RULE_MODULES = ("strategies.buy_and_hold", "strategies.ema_cross", "strategies.random_trader")


def register(name: str) -> Callable[[Factory], Factory]:
    """Register a rule-based strategy factory under `name` (the trader's `strategy`)."""

    def deco(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory

    return deco


def registered() -> dict[str, Factory]:
    """Return every registered rule-based strategy by name."""
    for module in RULE_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)
