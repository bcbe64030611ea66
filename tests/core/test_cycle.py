"""The cycle runner: steps in order, one cycle_id on every line, skip and failure recorded."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from engine import logging as arena_logging
from engine.bus import Bus
from engine.clock import SimClock
from engine.cycle import CycleContext, SkipCycle, TradingCycle
from engine.events import CycleFinished


class Step:
    def __init__(
        self,
        name: str,
        trail: list[str],
        clock: SimClock,
        *,
        takes: float = 0,
        raises: Exception | None = None,
    ) -> None:
        self.name, self.trail, self.clock, self.takes, self.raises = (
            name,
            trail,
            clock,
            takes,
            raises,
        )

    async def __call__(self, ctx: CycleContext) -> None:
        structlog.get_logger("step").info("step.ran", step=self.name)
        self.trail.append(self.name)
        if self.takes:
            await self.clock.sleep(self.takes)
        if self.raises:
            raise self.raises
        ctx.summary[self.name] = True


NAMES = ["market_snapshot", "decisions", "risk", "execution", "pnl", "persistence"]


async def test_steps_run_in_order_under_one_cycle_id(clock: SimClock, bus: Bus) -> None:
    trail: list[str] = []
    sub = bus.subscribe("w", [CycleFinished], policy="block")
    cycle = TradingCycle([Step(n, trail, clock) for n in NAMES], clock, bus)
    out = io.StringIO()
    arena_logging.configure("info", "json", out)
    summary = await cycle("manual")
    logs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert trail == NAMES
    assert summary["status"] == "ok" and all(summary[n] for n in NAMES)
    ids = {line.get("cycle_id") for line in logs}
    assert ids == {summary["cycle_id"]}
    assert [line["step"] for line in logs if line["event"] == "step.ran"] == NAMES
    (done,) = sub.drain()
    assert done.cycle_id == summary["cycle_id"] and done.status == "ok"


async def test_step_timings_are_wall_time_not_the_engine_clock(clock: SimClock, bus: Bus) -> None:
    import asyncio

    cycle = TradingCycle([Step("decisions", [], clock, takes=1.5)], clock, bus)
    task = asyncio.create_task(cycle("schedule"))
    await clock.advance(2)
    summary = await task
    # 1.5 simulated seconds passed in far less than 1.5 s of wall time.
    assert 0 < summary["steps"]["decisions"] < 1.5
    assert summary["steps"]["decisions"] <= summary["duration_s"] < 1.5


async def test_skip_ends_the_cycle_with_its_reason(clock: SimClock, bus: Bus) -> None:
    trail: list[str] = []
    sub = bus.subscribe("w", [CycleFinished], policy="block")
    steps = [
        Step("market_snapshot", trail, clock, raises=SkipCycle("every price is stale")),
        Step("decisions", trail, clock),
    ]
    summary = await TradingCycle(steps, clock, bus)("schedule")
    assert trail == ["market_snapshot"]
    assert (summary["status"], summary["skip_reason"]) == ("skipped", "every price is stale")
    assert sub.drain()[0].skip_reason == "every price is stale"


async def test_failed_step_is_recorded_and_raised_to_the_scheduler(
    clock: SimClock, bus: Bus
) -> None:
    sub = bus.subscribe("w", [CycleFinished], policy="block")
    steps = [Step("decisions", [], clock, raises=RuntimeError("model exploded"))]
    with pytest.raises(RuntimeError):
        await TradingCycle(steps, clock, bus)("schedule")
    (done,) = sub.drain()
    assert done.status == "failed" and done.summary["error"] == "RuntimeError: model exploded"


async def test_dry_run_publishes_nothing(clock: SimClock, bus: Bus) -> None:
    sub = bus.subscribe("w", [CycleFinished], policy="block")
    summary = await TradingCycle([Step("risk", [], clock)], clock, bus, dry_run=True)("manual")
    assert summary["status"] == "ok" and sub.drain() == []
