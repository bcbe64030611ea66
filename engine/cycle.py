"""The trading cycle: one `cycle_id`, steps run in order, one canonical `cycle.finished` line.

market snapshot → decisions → risk → execution → PnL → persistence. Each step is a small object
with a `name` and `async __call__(ctx)`; it reads and fills the shared `CycleContext`. The steps
live with what they drive: `engine.market.snapshot.MarketSnapshotStep`, `engine.traders.decide.
DecideStep`, `engine.paper.steps` (risk, execution, PnL) and `engine.store.writer.PersistStep`;
the cycle itself knows none of them. A step
raises `SkipCycle` to end the cycle early with a reason (e.g. every price is stale). Every cycle,
whatever its end, publishes one `CycleFinished` carrying the exact snapshot the traders saw.
A cycle starts by flushing the bus (`Bus.flush`), so the broker's trigger watch has seen every
frame the book has: the accounts the prompts show match the snapshot, live as in a replay.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from engine import metrics
from engine.bus import Bus
from engine.clock import Clock, to_datetime
from engine.decision import Action
from engine.events import CycleFinished, DecisionRejected

log = structlog.get_logger("cycle")


class SkipCycle(Exception):
    """End this cycle early, recorded as skipped with the given reason."""

    def __init__(self, reason: str, cycle_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cycle_id = cycle_id  # raised by a cycle-id source: the id the skipped cycle gets


class CyclePace(Protocol):
    """When a cycle reads the market after its decisions (engine.market.pacing.Pacer)."""

    async def wait(self, cycle_id: str, point: str) -> None: ...

    def mark(self, cycle_id: str, point: str, t: float | None = None) -> None: ...


class NoPace:
    """No recording and no replayed timing: steps read the market when they run."""

    async def wait(self, cycle_id: str, point: str) -> None:
        return None

    def mark(self, cycle_id: str, point: str, t: float | None = None) -> None:
        return None


NO_PACE = NoPace()


@dataclass
class CycleContext:
    cycle_id: str
    trigger: str
    started_at: float
    dry_run: bool
    wall_started: float = field(default_factory=time.perf_counter)
    snapshot: Any = None
    outcomes: dict[str, Any] = field(default_factory=dict)
    approved: dict[str, list[Action]] = field(default_factory=dict)
    rejections: list[DecisionRejected] = field(default_factory=list)
    fills: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    pace: CyclePace = NO_PACE  # a session recording's or replay's timing of the market reads


class Step(Protocol):
    name: str

    async def __call__(self, ctx: CycleContext) -> None: ...


def new_cycle_id(now: float) -> str:
    """Return a readable, unique cycle id: UTC time of the cycle plus a short unique suffix."""
    return f"{to_datetime(now):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _random_id(now: float, trigger: str) -> str:
    return new_cycle_id(now)


class TradingCycle:
    """Runs the steps of one cycle; callable as a scheduler job body."""

    def __init__(self, steps: Sequence[Step], clock: Clock, bus: Bus, *, dry_run: bool = False,
                 cycle_ids: Callable[[float, str], str] | None = None,
                 pace: CyclePace | None = None):
        self.steps = list(steps)
        # Where ids come from: random by default; a replay's are the recorded ones
        # (engine.market.recording.CycleIds, told the trigger), so its prompts hash as live.
        self._cycle_ids = cycle_ids or _random_id
        self._pace = pace or NO_PACE
        self._clock = clock
        self._bus = bus
        self._dry_run = dry_run

    async def __call__(self, trigger: str) -> dict[str, Any]:
        # Every frame handled so far reaches the bus handlers first (the broker's trigger watch:
        # marks, stops, funding), as a replay hands each record's events over before moving on;
        # live, they would otherwise wait for the next loop turn, and the prompts (mark,
        # unrealized P&L, closed positions) could show a state the replay never has.
        self._bus.flush()
        now = self._clock.time()  # read once: the id, the start and the snapshot share it
        try:
            cycle_id, skip = self._cycle_ids(now, trigger), None
        except SkipCycle as exc:  # a session replay: the recorded run ran no cycle then
            cycle_id, skip = exc.cycle_id or new_cycle_id(now), exc.reason
        ctx = CycleContext(cycle_id, trigger, now, self._dry_run, pace=self._pace)
        status, skip_reason, error = "ok", None, None
        timings: dict[str, float] = {}
        with structlog.contextvars.bound_contextvars(cycle_id=ctx.cycle_id):
            log.info("cycle.started", trigger=trigger, dry_run=self._dry_run)
            try:
                if skip is not None:
                    raise SkipCycle(skip)
                for step in self.steps:
                    t0 = time.perf_counter()  # durations are wall time, even in a replay
                    await step(ctx)
                    timings[step.name] = round(time.perf_counter() - t0, 6)
            except SkipCycle as skip:
                status, skip_reason = "skipped", skip.reason
            except asyncio.CancelledError:
                status, error = "cancelled", "cancelled"
                raise
            except Exception as exc:  # logged with the step's name, recorded, re-raised
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
        duration = round(time.perf_counter() - ctx.wall_started, 6)
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
        if status == "ok":
            metrics.LAST_CYCLE_OK.set(end)
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
