"""The LLM trader: prompt → provider call → tolerant parse → DecisionOutcome with its cost.

An answer that does not validate, names an unknown symbol or action, or was cut at max tokens
becomes a hold with `valid=False` and the exact reason; so does a failed call. The deadline of
the whole call is enforced by `DecisionStep`; this strategy passes it to the SDK as a backstop.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from engine.decision import Decision
from engine.settings import LLMSettings, SettingsError, TraderSettings
from engine.traders.answers import InvalidAnswer, parse_decision
from engine.traders.blind import BlindLeak
from engine.traders.prompt import build_prompt, load_template
from engine.traders.providers import LLMAnswer, LLMClient, LLMError, Usage, cost_usd
from strategies.base import DecisionOutcome, TraderContext

if TYPE_CHECKING:
    from engine.clock import Clock

log = structlog.get_logger("decisions")


class LLMStrategy:
    """Decides by asking one model through its provider client."""

    def __init__(self, trader: TraderSettings, client: LLMClient, clock: Clock,
                 settings: LLMSettings, *, deadline_seconds: float) -> None:
        assert trader.provider is not None and trader.model is not None
        self.name = trader.name
        self.trader = trader
        try:  # the trader's own system-prompt template (a prompt variant), or the default
            self.template = load_template(trader.prompt_template)
        except ValueError as exc:
            raise SettingsError(f"traders '{trader.name}': {exc}") from None
        self.provider: str = trader.provider
        self.model: str = trader.model
        self.timeout_seconds = deadline_seconds
        self._client = client
        self._clock = clock
        self._price = settings.prices.get(trader.model)
        self._temperature = (None if trader.model in settings.omit_temperature
                             else trader.temperature)
        self._warned_price = False

    def _blind(self, ctx: TraderContext) -> Any:
        """Return the run's Blind when this trader is blind (engine.traders.blind), else None."""
        return ctx.extra.get("blind") if self.trader.blind else None

    def prompt_hash(self, ctx: TraderContext) -> str:
        """Return the hash of the prompt this strategy sends for `ctx`."""
        blind = self._blind(ctx)
        return (build_prompt(ctx, self.template) if blind is None
                else blind.prompt(ctx, self.template)).hash

    async def decide(self, ctx: TraderContext) -> DecisionOutcome:
        """Ask the model for a decision on `ctx` (blind: audited, and the answer mapped back)."""
        blind = self._blind(ctx)
        started = time.perf_counter()  # latency is wall time, even on a simulated clock
        if blind is None:
            prompt = build_prompt(ctx, self.template)
        else:
            try:
                prompt = blind.prompt(ctx, self.template)
            except BlindLeak as exc:  # nothing is sent; the run is stopped
                log.error("blind.leak", trader=self.name, leak=str(exc))
                return self._outcome(Decision.hold(), "", False, f"blind_leak: {exc}", "",
                                     started)
        try:
            answer = await self._client.complete(
                prompt, model=self.model, temperature=self._temperature,
                max_tokens=self.trader.max_tokens, deadline_seconds=self.timeout_seconds)
        except LLMError as exc:
            return self._outcome(Decision.hold(), "", False, str(exc), prompt.hash, started,
                                 latency_ms=exc.latency_ms)
        raw = f"<reasoning>\n{answer.reasoning}\n</reasoning>\n{answer.text}" \
            if answer.reasoning else answer.text
        symbols = tuple(getattr(ctx.snapshot, "symbols", {}) or ())
        if answer.truncated:
            return self._outcome(Decision.hold(), raw, False,
                                 f"truncated: stop_reason={answer.stop_reason} at max_tokens="
                                 f"{self.trader.max_tokens}", prompt.hash, started, answer)
        text = answer.text if answer.text.strip() else answer.reasoning
        try:
            if blind is None:
                decision = parse_decision(text, symbols)
            else:  # it names the aliases, at blind prices
                decision = blind.unblind(parse_decision(text, blind.symbols(symbols)))
        except InvalidAnswer as exc:
            return self._outcome(Decision.hold(), raw, False, str(exc), prompt.hash, started,
                                 answer)
        return self._outcome(decision, raw, True, None, prompt.hash, started, answer)

    def _outcome(self, decision: Decision, raw: str, valid: bool, error: str | None,
                 prompt_hash: str, started: float, answer: LLMAnswer | None = None, *,
                 latency_ms: float | None = None) -> DecisionOutcome:
        usage = answer.usage if answer else Usage()
        if answer is not None:
            latency_ms = answer.latency_ms
        if latency_ms is None:  # wall time; a session gives the recorded latency instead
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
        if answer and self._price is None and not self._warned_price:
            self._warned_price = True
            log.warning("llm.price_unknown", trader=self.name, model=self.model,
                        detail="no llm.prices entry: cost counted as 0")
        return DecisionOutcome(
            decision=decision, raw_answer=raw, valid=valid, error=error,
            provider=self.provider, model=self.model,
            prompt_hash=prompt_hash, input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens, cost_usd=cost_usd(self._price, usage),
            latency_ms=latency_ms,
            request_id=answer.request_id if answer else None,
            model_version=answer.model if answer else None)

    async def aclose(self) -> None:
        """Close the provider client."""
        await self._client.aclose()
