"""A session replay's timing: each recorded cycle starts, and reads the market, when it did live.

Live with `--record`, `Pacer.mark` writes a `pace` line at each instant a cycle reads the book
after its traders decided: `risk` (the risk review, when the decisions are in) and
`fill:<trader>` (the instant that trader's orders filled). A replay of that recording waits, in
`Pacer.wait`, on the simulated clock until the recorded instant with the clock released (the
replay moves the market on meanwhile, as `LLMSession` does for an answer's latency), so each fill
executes against the same book state and at the same time as it did live.

`RecordedCycles` fires each recorded cycle (scheduled, manual, `--once`, SIGUSR1, `/trigger`)
at its recorded start instant with its recorded trigger; the engine then fires no scheduled
trading cycle of its own, so nothing depends on where second boundaries fall.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from engine.clock import Clock, SimClock

log = structlog.get_logger("replay")

# A job's settings fired by hand only (a session replay's cycle job: RecordedCycles fires it)
BY_HAND: dict[str, Any] = {"schedule": "once", "delay_seconds": 10 * 365 * 86_400.0}


class Pacer:
    """Records (live) or replays (on a simulated clock) the instants a cycle reads the market."""

    def __init__(self, clock: Clock, *, recorder: Any = None,
                 recorded: Mapping[tuple[str, str], float] | None = None) -> None:
        self._clock = clock
        self._recorder = recorder  # a FrameRecorder (--record)
        self._recorded = dict(recorded or {})
        self.waited = 0  # pace points a replay waited for

    async def wait(self, cycle_id: str, point: str) -> None:
        """Replay: wait until the recorded instant of `point` in `cycle_id`, time released."""
        t = self._recorded.get((cycle_id, point))
        clock = self._clock
        if t is None or not isinstance(clock, SimClock) or t <= clock.time():
            return
        self.waited += 1
        async with clock.released():
            await clock.sleep_until(t)

    def mark(self, cycle_id: str, point: str, t: float | None = None) -> None:
        """Record that `cycle_id` read the market for `point` at `t` (default: now)."""
        if self._recorder is not None:
            when = self._clock.time() if t is None else t
            self._recorder.write_record("pace", {"cycle_id": cycle_id, "point": point}, when)


class RecordedCycles:
    """Fires each recorded cycle at its recorded start instant, with its recorded trigger."""

    def __init__(self, starts: Sequence[tuple[float, str]], clock: Clock,
                 fire: Callable[..., Awaitable[tuple[bool, str, dict[str, Any]]]]) -> None:
        self._starts = sorted(starts, key=lambda s: s[0])
        self._clock = clock
        self._fire = fire  # Scheduler.trigger of the cycle job, not waiting for its end
        self.fired = 0
        self.missed = 0

    async def run(self) -> None:
        """Sleep until each recorded start and fire the cycle there; return after the last."""
        for t, trigger in self._starts:
            await self._clock.sleep_until(t)
            started, reason, _ = await self._fire(trigger=trigger)
            if started:
                self.fired += 1
            else:
                self.missed += 1
                log.warning("replay.cycle_not_fired", at=t, trigger=trigger, reason=reason)
        log.info("replay.cycles_fired", fired=self.fired, missed=self.missed)
