"""The trading cycle: one `cycle_id`, steps run in order, one canonical `cycle.finished` line.

market snapshot → decisions → risk → execution → PnL → persistence. Each step is a small object
with a `name` and `async __call__(ctx)`; it reads and fills the shared `CycleContext`. A step
raises `SkipCycle` to end the cycle early with a reason (e.g. every price is stale). Every cycle,
whatever its end, publishes one `CycleFinished` carrying the exact snapshot the traders saw.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from engine import metrics
from engine.bus import Bus
from engine.clock import Clock, to_datetime
from engine.decision import Action
from engine.events import CycleFinished, DecisionRejected, OrderFilled

log = structlog.get_logger("cycle")


class SkipCycle(Exception):
    """End this cycle early, recorded as skipped with the given reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class CycleContext:
    cycle_id: str
    trigger: str
    started_at: float
    dry_run: bool
    snapshot: Any = None
    outcomes: dict[str, Any] = field(default_factory=dict)
    approved: dict[str, list[Action]] = field(default_factory=dict)
    rejections: list[DecisionRejected] = field(default_factory=list)
    fills: int = 0
    summary: dict[str, Any] = field(default_factory=dict)


class Step(Protocol):
    name: str

    async def __call__(self, ctx: CycleContext) -> None: ...


def new_cycle_id(now: float) -> str:
    """Return a readable, unique cycle id: UTC time of the cycle plus a short unique suffix."""
    return f"{to_datetime(now):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


class TradingCycle:
    """Runs the steps of one cycle; callable as a scheduler job body."""

    def __init__(self, steps: Sequence[Step], clock: Clock, bus: Bus, *, dry_run: bool = False):
        self.steps = list(steps)
        self._clock = clock
        self._bus = bus
        self._dry_run = dry_run

    async def __call__(self, trigger: str) -> dict[str, Any]:
        clock = self._clock
        ctx = CycleContext(new_cycle_id(clock.time()), trigger, clock.time(), self._dry_run)
        status, skip_reason, error = "ok", None, None
        timings: dict[str, float] = {}
        with structlog.contextvars.bound_contextvars(cycle_id=ctx.cycle_id):
            log.info("cycle.started", trigger=trigger, dry_run=self._dry_run)
            try:
                for step in self.steps:
                    t0 = clock.time()
                    await step(ctx)
                    timings[step.name] = round(clock.time() - t0, 6)
            except SkipCycle as skip:
                status, skip_reason = "skipped", skip.reason
            except asyncio.CancelledError:
                status, error = "cancelled", "cancelled"
                raise
            except Exception as exc:
                status, error = "failed", f"{type(exc).__name__}: {exc}"
                log.exception("cycle.step_failed", step=step.name)
                raise
            finally:
                self._finish(ctx, status, skip_reason, error, timings)
        return dict(ctx.summary)

    def _finish(
        self,
        ctx: CycleContext,
        status: str,
        skip_reason: str | None,
        error: str | None,
        timings: dict[str, float],
    ) -> None:
        end = self._clock.time()
        duration = round(end - ctx.started_at, 6)
        ctx.summary.update(
            cycle_id=ctx.cycle_id,
            status=status,
            trigger=ctx.trigger,
            duration_s=duration,
            steps=timings,
        )
        if skip_reason:
            ctx.summary["skip_reason"] = skip_reason
        if error:
            ctx.summary["error"] = error
        metrics.CYCLES.labels(status).inc()
        metrics.CYCLE_DURATION.observe(duration)
        if not ctx.dry_run:
            snapshot = ctx.snapshot.to_dict() if ctx.snapshot is not None else None
            self._bus.publish(
                CycleFinished(
                    cycle_id=ctx.cycle_id,
                    trigger=ctx.trigger,
                    started_at=ctx.started_at,
                    finished_at=end,
                    status=status,  # type: ignore[arg-type]
                    skip_reason=skip_reason,
                    summary=dict(ctx.summary),
                    snapshot=snapshot,
                )
            )
        level = "info" if status in ("ok", "skipped") else "error"
        getattr(log, level)(
            "cycle.finished", **{k: v for k, v in ctx.summary.items() if k != "cycle_id"}
        )


# ---------------------------------------------------------------------------- the steps


class MarketSnapshotStep:
    """Take one immutable snapshot that every trader of the cycle sees; skip on all-stale."""

    name = "market_snapshot"

    def __init__(self, book: Any, candles: Any, feed_settings: Any, clock: Clock) -> None:
        from engine.snapshot import take_snapshot

        self._take = take_snapshot
        self._book, self._candles, self._settings, self._clock = book, candles, feed_settings, clock

    async def __call__(self, ctx: CycleContext) -> None:
        snap = self._take(self._book, self._candles, self._settings, self._clock.time())
        ctx.snapshot = snap
        stale = list(snap.stale)
        fresh = [s for s in snap.symbols if s not in snap.stale]
        ctx.summary.update(symbols=len(fresh), stale=stale)
        if stale:
            log.warning(
                "cycle.stale_symbols",
                symbols=stale,
                max_age_s=self._settings.max_price_age_seconds,
                detail="no decision on these symbols this cycle",
            )
        if not fresh:
            raise SkipCycle("every price is stale" if stale else "no prices yet")


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
    ) -> None:
        self._decisions, self._broker, self._risk = decisions, broker, risk_settings
        self._recent_fills = recent_fills

    async def __call__(self, ctx: CycleContext) -> None:
        from strategies.base import TraderContext

        broker = self._broker
        contexts = {}
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
                extra={},
            )
        ctx.outcomes = await self._decisions.decide_all(contexts)
        valid = 0
        for trader, outcome in ctx.outcomes.items():
            if outcome.skipped:  # cooling down: no call was made, nothing to count
                continue
            holds = not outcome.decision.trades()
            broker.record_decision(
                trader, valid=outcome.valid, holds=holds, cost_usd=outcome.cost_usd
            )
            valid += outcome.valid
        ctx.summary.update(
            traders=len(contexts),
            valid=valid,
            invalid=len(ctx.outcomes) - valid,
            llm_cost_usd=round(sum(o.cost_usd for o in ctx.outcomes.values()), 6),
        )


class RiskStep:
    """Check every action against the risk rules; refusals name their rule."""

    name = "risk"

    def __init__(self, broker: Any, bus: Bus) -> None:
        self._broker, self._bus = broker, bus

    async def __call__(self, ctx: CycleContext) -> None:
        for trader, outcome in ctx.outcomes.items():
            approved, rejected = self._broker.review(
                trader, outcome.decision, ctx.snapshot, ctx.started_at, ctx.cycle_id
            )
            ctx.approved[trader] = list(approved)
            ctx.rejections.extend(rejected)
            for r in rejected:
                metrics.REJECTIONS.labels(r.rule).inc()
                log.info(
                    "decision.rejected",
                    trader=trader,
                    symbol=r.symbol,
                    action=r.action,
                    rule=r.rule,
                    detail=r.detail,
                )
                if not ctx.dry_run:
                    self._bus.publish(r)
        ctx.summary.update(
            approved=sum(len(a) for a in ctx.approved.values()), rejected=len(ctx.rejections)
        )


class ExecuteStep:
    """Fill the approved actions on the paper accounts (nothing in dry-run)."""

    name = "execution"

    def __init__(self, broker: Any) -> None:
        self._broker = broker

    async def __call__(self, ctx: CycleContext) -> None:
        if ctx.dry_run:
            ctx.summary["fills"] = 0
            planned = {
                t: [a.model_dump(mode="json") for a in acts]
                for t, acts in ctx.approved.items()
                if acts
            }
            log.info("cycle.dry_run", would_execute=planned)
            return
        for trader, actions in ctx.approved.items():
            if actions:
                events = self._broker.execute(trader, actions, ctx.cycle_id, ctx.snapshot)
                ctx.fills += sum(isinstance(e, OrderFilled) for e in events)
        ctx.summary["fills"] = ctx.fills


class PnLStep:
    """Mark every account, publish its snapshot and the leaderboard."""

    name = "pnl"

    def __init__(self, broker: Any, *, console: bool = False) -> None:
        self._broker, self._console = broker, console

    async def __call__(self, ctx: CycleContext) -> None:
        from engine.leaderboard import render_table

        broker = self._broker
        broker.mark_all()
        if not ctx.dry_run:
            broker.publish_snapshots("cycle", ctx.cycle_id)
        board = broker.leaderboard(ctx.cycle_id)
        if self._console and board.rows:
            print(render_table(board.rows), flush=True)


class PersistStep:
    """Hand the cycle's rows to the writer: wait while it is over capacity (back-pressure)."""

    name = "persistence"

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def __call__(self, ctx: CycleContext) -> None:
        await self._bus.wait_for_capacity()
