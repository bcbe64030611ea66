"""The decision step of a cycle: every trader decides at once, each within its own deadline.

All traders run in one `asyncio.gather`; each branch catches its own failures, so a slow,
failing or invalid trader holds alone and the step lasts about as long as the slowest trader.
Deadlines are measured on the engine clock (a `SimClock` in tests and replays). Actions on stale
symbols are dropped. A trader failing `max_consecutive_failures` times in a row sits out
`cooldown_seconds` (it holds, makes no call) and then resumes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from engine import metrics
from engine.clock import to_datetime
from engine.cycle import CycleContext
from engine.decision import Decision
from engine.events import DecisionMade, TraderBudgetReached, TraderCooldown
from engine.scheduler import with_deadline
from engine.settings import LLMSettings
from engine.traders.budget import Budget, TraderCaps
from engine.traders.prompt import trading_terms
from strategies.base import DecisionOutcome, Strategy, TraderContext

if TYPE_CHECKING:
    from engine.bus import Bus
    from engine.clock import Clock

log = structlog.get_logger("decisions")


@dataclass(slots=True)
class _TraderState:
    failures: int = 0
    cooldown_until: float | None = None
    history: deque[Mapping[str, Any]] = field(default_factory=deque)


class DecisionStep:
    """Asks every trader for its decision concurrently and publishes `DecisionMade` for each."""

    def __init__(self, strategies: dict[str, Strategy], settings: LLMSettings, clock: Clock,
                 bus: Bus) -> None:
        self.strategies = strategies
        self.settings = settings
        self._clock = clock
        self._bus = bus
        self._state = {name: _TraderState(history=deque(maxlen=settings.recent_decisions))
                       for name in strategies}
        self.budget = Budget(settings.budget, {n: _caps(s) for n, s in strategies.items()})
        self._capped: dict[str, tuple[str, float]] = {}  # trader -> (cap, until) alerted

    async def decide_all(self, contexts: dict[str, TraderContext]) -> dict[str, DecisionOutcome]:
        """Return every trader's outcome; one gather, per-trader deadlines, failures isolated."""
        names = [n for n in contexts if n in self.strategies]
        outcomes = await asyncio.gather(*(self._decide_one(n, contexts[n]) for n in names))
        return dict(zip(names, outcomes, strict=True))

    def previous(self, trader: str) -> tuple[Mapping[str, Any], ...]:
        """Return the trader's recent decisions, oldest first (for its next prompt)."""
        state = self._state.get(trader)
        return tuple(state.history) if state else ()

    def mark_refused(self, trader: str, cycle_id: str, refusals: list[dict[str, Any]]) -> None:
        """Mark the actions of `trader`'s decision in `cycle_id` that were refused."""
        state = self._state.get(trader)
        entry = next((e for e in reversed(state.history) if e.get("cycle_id") == cycle_id),
                     None) if state else None
        for r in refusals if entry else ():
            for action in entry["actions"]:  # type: ignore[index]
                if action.get("symbol") == r["symbol"] and action.get("action") == r["action"]:
                    action["refused"] = f"{r['rule']}: {r['detail']}"

    def cooling_down(self) -> dict[str, float]:
        """Return the traders sitting out a cool-down and when each resumes."""
        return {n: s.cooldown_until for n, s in self._state.items()
                if s.cooldown_until is not None}

    async def aclose(self) -> None:
        """Close every strategy's SDK client."""
        for strategy in self.strategies.values():
            closer = getattr(strategy, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception as exc:  # closing must not stop the others from closing
                    log.warning("decisions.close_failed", trader=strategy.name, error=str(exc))

    async def _decide_one(self, name: str, ctx: TraderContext) -> DecisionOutcome:
        strategy = self.strategies[name]
        state = self._state[name]
        now = self._clock.time()
        if state.cooldown_until is not None:
            if now < state.cooldown_until:
                # No answer at all: counted as an invalid hold with reason "cooldown".
                metrics.DECISIONS.labels(name, "hold", "false", "cooldown").inc()
                return self._skipped(strategy, "cooldown")
            log.info("trader.resumed", trader=name, cycle_id=ctx.cycle_id)
            state.cooldown_until, state.failures = None, 0
        if getattr(strategy, "provider", "rule") != "rule" and self._over_budget(name, ctx):
            metrics.DECISIONS.labels(name, "hold", "false", "budget").inc()
            return self._skipped(strategy, "budget")
        deadline = getattr(strategy, "timeout_seconds", None) or self.settings.deadline_seconds
        started = time.perf_counter()  # latency is wall time, even on a simulated clock
        try:
            outcome = await with_deadline(self._clock, strategy.decide(ctx), deadline)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            outcome = self._failed(strategy, ctx, f"timeout: no answer within the "
                                   f"{deadline:g}s deadline",
                                   latency_ms=round((time.perf_counter() - started) * 1000, 3))
        except Exception as exc:  # isolation boundary: a strategy's error is its invalid hold
            log.exception("decision.failed", trader=name, cycle_id=ctx.cycle_id)
            outcome = self._failed(strategy, ctx, f"{type(exc).__name__}: {exc}")
        outcome = self._drop_stale(name, ctx, outcome)
        self.budget.add(name, outcome.cost_usd, self._clock.time())
        self._count(name, state, ctx, outcome)
        self._publish(name, ctx, outcome)
        return outcome

    def _over_budget(self, name: str, ctx: TraderContext) -> bool:
        """Return True when a spend cap stops `name`; log and alert once per cap reached."""
        now = self._clock.time()
        hit = self.budget.capped(name, now)
        if hit is None:
            return False
        cap, cap_usd, spent, until = hit
        if self._capped.get(name) != (cap, until):
            self._capped[name] = (cap, until)
            log.warning("trader.budget_reached", trader=name, cycle_id=ctx.cycle_id, cap=cap,
                        cap_usd=cap_usd, spent_usd=spent,
                        until=None if until == float("inf") else to_datetime(until).isoformat())
            self._bus.publish(TraderBudgetReached(name, cap, cap_usd, spent, until, now))
        return True

    def _failed(self, strategy: Strategy, ctx: TraderContext, error: str,
                latency_ms: float = 0.0) -> DecisionOutcome:
        hasher = getattr(strategy, "prompt_hash", None)
        try:
            prompt_hash = hasher(ctx) if hasher else ""
        except Exception:  # isolation boundary: strategy code; a hash is only a label here
            prompt_hash = ""
        return DecisionOutcome(
            decision=Decision.hold(), raw_answer="", valid=False, error=error,
            provider=getattr(strategy, "provider", "rule"),
            model=getattr(strategy, "model", strategy.name), prompt_hash=prompt_hash,
            latency_ms=latency_ms)

    def _skipped(self, strategy: Strategy, reason: str) -> DecisionOutcome:
        return DecisionOutcome(
            decision=Decision.hold(), raw_answer="", valid=True, error=None,
            provider=getattr(strategy, "provider", "rule"),
            model=getattr(strategy, "model", strategy.name), prompt_hash="", skipped=reason)

    def _drop_stale(self, name: str, ctx: TraderContext,
                    outcome: DecisionOutcome) -> DecisionOutcome:
        stale = set(getattr(ctx.snapshot, "stale", ()) or ())
        actions = outcome.decision.actions
        dropped = sorted({a.symbol for a in actions if a.symbol in stale and a.action != "hold"})
        if not dropped:
            return outcome
        log.warning("decision.stale_dropped", trader=name, cycle_id=ctx.cycle_id,
                    symbols=dropped)
        kept = Decision(actions=tuple(a for a in actions if a.symbol not in stale))
        return dataclasses.replace(outcome, decision=kept)

    def _count(self, name: str, state: _TraderState, ctx: TraderContext,
               outcome: DecisionOutcome) -> None:
        state.history.append({
            "cycle_id": ctx.cycle_id, "ts": ctx.now, "valid": outcome.valid,
            "error": outcome.error,
            "actions": [a.model_dump(mode="json") for a in outcome.decision.actions],
        })
        if outcome.valid:
            state.failures = 0
            return
        if (outcome.error or "").startswith("not_recorded"):
            return  # a replay without this answer: not the model's failure, no cool-down
        state.failures += 1
        if state.failures >= self.settings.max_consecutive_failures:
            state.cooldown_until = self._clock.time() + self.settings.cooldown_seconds
            log.warning("trader.cooldown", trader=name, cycle_id=ctx.cycle_id,
                        failures=state.failures, seconds=self.settings.cooldown_seconds,
                        until=to_datetime(state.cooldown_until).isoformat(),
                        last_error=outcome.error)
            self._bus.publish(TraderCooldown(name, state.failures, state.cooldown_until,
                                             outcome.error, self._clock.time()))

    def _publish(self, name: str, ctx: TraderContext, o: DecisionOutcome) -> None:
        decision = o.decision.as_dict()
        if o.valid:
            log.info("decision.made", trader=name, cycle_id=ctx.cycle_id,
                     actions=len(o.decision.trades()), prompt_hash=o.prompt_hash,
                     latency_ms=o.latency_ms, input_tokens=o.input_tokens,
                     output_tokens=o.output_tokens, cache_read_tokens=o.cache_read_tokens,
                     cost_usd=o.cost_usd, request_id=o.request_id,
                     model_version=o.model_version)
        else:
            log.warning("decision.invalid", trader=name, cycle_id=ctx.cycle_id, reason=o.error,
                        raw=o.raw_answer, prompt_hash=o.prompt_hash, request_id=o.request_id)
        self._bus.publish(DecisionMade(
            cycle_id=ctx.cycle_id, trader=name, provider=o.provider, model=o.model,
            prompt_hash=o.prompt_hash, raw_answer=o.raw_answer, decision=decision,
            valid=o.valid, error=o.error, input_tokens=o.input_tokens,
            output_tokens=o.output_tokens, cache_read_tokens=o.cache_read_tokens,
            cache_write_tokens=o.cache_write_tokens, cost_usd=o.cost_usd,
            latency_ms=o.latency_ms, request_id=o.request_id, ts=self._clock.time(),
            model_version=o.model_version))
        valid = "true" if o.valid else "false"
        reason = "" if o.valid else metrics.invalid_reason(o.error)
        for action in o.decision.actions or ():
            metrics.DECISIONS.labels(name, action.action, valid, reason).inc()
        if not o.decision.actions:
            metrics.DECISIONS.labels(name, "hold", valid, reason).inc()
        if o.provider != "rule":
            metrics.LLM_LATENCY.labels(name, o.model).observe(o.latency_ms / 1000)
            for kind in ("input", "output", "cache_read", "cache_write"):
                metrics.LLM_TOKENS.labels(name, o.model, kind).inc(getattr(o, f"{kind}_tokens"))
            metrics.LLM_COST.labels(name, o.model).inc(o.cost_usd)


def _caps(strategy: Strategy) -> TraderCaps:
    trader = getattr(strategy, "trader", None)
    return TraderCaps(getattr(trader, "daily_budget_usd", None),
                      getattr(trader, "total_budget_usd", None))


class DecideStep:
    """Ask every active trader at once, from the same snapshot."""

    name = "decisions"

    def __init__(
        self,
        decisions: Any,
        broker: Any,
        risk_settings: Any,
        *,
        recent_fills: int = 10,
        funding_settled: bool = False,
        blind: Any = None,
    ) -> None:
        self._decisions, self._broker, self._risk = decisions, broker, risk_settings
        self._recent_fills = recent_fills
        # A backtest's funding rate is the last settled one (history has no estimate of the
        # next): the prompt says so.
        self._funding_settled = funding_settled
        self._blind = blind  # engine.traders.blind.Blind: the run's mapping for blind traders
        self._last: CycleContext | None = None  # the previous cycle, for its refusals

    def _refusals(self) -> dict[str, list[dict[str, Any]]]:
        """Return last cycle's refusals (review and fill time) per trader, and mark them."""
        last, self._last = self._last, None
        out: dict[str, list[dict[str, Any]]] = {}
        for r in last.rejections if last is not None else ():
            out.setdefault(r.trader, []).append(
                {"cycle_id": r.cycle_id, "symbol": r.symbol, "action": r.action,
                 "rule": r.rule, "detail": r.detail})
        for trader, refused in out.items():
            self._decisions.mark_refused(trader, last.cycle_id, refused)  # type: ignore[union-attr]
        return out

    async def __call__(self, ctx: CycleContext) -> None:
        broker = self._broker
        contexts = {}
        refusals = self._refusals()
        self._last = ctx
        symbols = tuple(getattr(ctx.snapshot, "symbols", None) or ())
        terms = trading_terms(broker.settings, broker.filter_for, symbols,
                              self._decisions.settings.funding_interval_hours)
        if self._funding_settled:
            terms["funding_rate"] = "last_settled"
        for trader in self._decisions.strategies:
            if trader not in broker.accounts:
                continue
            blocked = broker.blocked_reason(trader, ctx.started_at)
            if blocked:
                log.info("trader.sits_out", trader=trader, reason=blocked)
                continue
            contexts[trader] = TraderContext(
                trader=trader,
                cycle_id=ctx.cycle_id,
                now=ctx.started_at,
                snapshot=ctx.snapshot,
                account=broker.account_view(trader),
                positions=broker.positions_view(trader),
                recent_fills=broker.recent_fills(trader, self._recent_fills),
                previous_decisions=self._decisions.previous(trader),
                risk=self._risk,
                extra={"refusals": tuple(refusals.get(trader, ())),
                       **({"blind": self._blind} if self._blind is not None else {})},
                terms=terms,
            )
        ctx.outcomes = await self._decisions.decide_all(contexts)
        valid = skipped = 0
        for trader, outcome in ctx.outcomes.items():
            if outcome.skipped:  # cool-down or spend cap: no call; counts against coverage only
                broker.record_decision(trader, valid=False, holds=True, cost_usd=0.0,
                                       skipped=True)
                skipped += 1
                continue
            holds = not outcome.decision.trades()
            broker.record_decision(
                trader, valid=outcome.valid, holds=holds, cost_usd=outcome.cost_usd
            )
            valid += outcome.valid
        ctx.summary.update(
            traders=len(contexts),
            valid=valid,
            invalid=len(ctx.outcomes) - valid - skipped,  # a cool-down is not an invalid answer
            llm_cost_usd=round(sum(o.cost_usd for o in ctx.outcomes.values()), 6),
            # traders that sat out this cycle in cool-down (the run report's cool-down rate)
            cooldown=sorted(t for t, o in ctx.outcomes.items() if o.skipped == "cooldown"),
            budget=sorted(t for t, o in ctx.outcomes.items() if o.skipped == "budget"),
        )
