"""The strategy interface: one async `decide(ctx)` taking one context object, and the registry.

A strategy gets everything it may look at in a `TraderContext` (new inputs go on the context or
in `ctx.extra`, never as new parameters) and returns a `DecisionOutcome`: the decision plus the
raw answer, validity and the cost of getting it. Rule-based strategies register a factory under
their name with `@register("name")`; `build_strategies` makes one strategy per enabled trader.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

from engine.decision import Decision
from engine.settings import RiskSettings, Secrets, Settings, SettingsError, TraderSettings

if TYPE_CHECKING:
    from engine.clock import Clock

log = structlog.get_logger("decisions")

# Environment variable holding each provider's key (for the start-up warning).
KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY",
           "deepseek": "DEEPSEEK_API_KEY"}


@dataclass(frozen=True, slots=True)
class TraderContext:
    """Everything one trader may look at when it decides in one cycle."""

    trader: str
    cycle_id: str
    now: float
    snapshot: Any  # engine.snapshot.MarketSnapshot, the same object for every trader in a cycle
    account: Mapping[str, Any]
    positions: tuple[Mapping[str, Any], ...]
    recent_fills: tuple[Mapping[str, Any], ...]
    previous_decisions: tuple[Mapping[str, Any], ...]
    risk: RiskSettings
    extra: Mapping[str, Any] = field(default_factory=dict)


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
RULE_MODULES = ("strategies.buy_and_hold", "strategies.ema_cross")


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


def build_strategies(settings: Settings, secrets: Secrets, clock: Clock, *,
                     record_llm_dir: str | None = None) -> dict[str, Strategy]:
    """Make one strategy per enabled trader; LLM traders without an API key are left out."""
    rules = registered()
    out: dict[str, Strategy] = {}
    for trader in settings.traders:
        if not trader.enabled:
            continue
        if trader.strategy == "llm":
            strategy = _build_llm(trader, settings, secrets, clock, record_llm_dir)
            if strategy is not None:
                out[trader.name] = strategy
            continue
        factory = rules.get(trader.strategy)
        if factory is None:
            known = ", ".join(["llm", *sorted(rules)])
            raise SettingsError(f"trader {trader.name!r}: unknown strategy {trader.strategy!r}; "
                                f"expected one of {known}")
        out[trader.name] = factory(trader, settings)
    return out


def _build_llm(trader: TraderSettings, settings: Settings, secrets: Secrets, clock: Clock,
               record_llm_dir: str | None) -> Strategy | None:
    from engine.llm import FixtureRecorder, make_client
    from strategies.llm import LLMStrategy

    assert trader.provider is not None and trader.model is not None  # settings validate it
    key = secrets.api_key(trader.provider)
    if not key:
        log.warning("trader.disabled", trader=trader.name, reason="missing_api_key",
                    env=KEY_ENV[trader.provider])
        return None
    deadline = trader.timeout_seconds or settings.llm.deadline_seconds
    recorder = (FixtureRecorder(record_llm_dir, trader.name, trader.provider, clock)
                if record_llm_dir else None)
    client = make_client(trader.provider, settings.llm.providers[trader.provider], key, clock,
                         recorder=recorder)
    return LLMStrategy(trader, client, clock, settings.llm, deadline_seconds=deadline)
