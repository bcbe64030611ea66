"""Clock-aligned jobs, each behind its own asyncio.Lock.

A job fires on its schedule (`interval` aligned to wall-clock multiples, `daily` at HH:MM UTC, or
`once`). A fire that finds the job still running is skipped, logged and counted; fires missed
while the loop was busy or the machine slept coalesce into one run; a run past its timeout is
cancelled and recorded as failed; a failing run never stops the scheduler. Manual triggers go
through the same lock. Every execution (and every skipped fire) is published as a `JobRun`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import structlog

from engine import metrics
from engine.bus import Bus
from engine.clock import Clock, to_datetime
from engine.events import JobRun
from engine.halt import TradingGate
from engine.settings import JobSettings

log = structlog.get_logger("scheduler")

JobFunc = Callable[[str], Awaitable[dict[str, Any] | None]]


async def with_deadline(clock: Clock, aw: Awaitable[Any], seconds: float) -> Any:
    """Await `aw`, cancelling it and raising TimeoutError after `seconds` of clock time."""
    task = asyncio.ensure_future(aw)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        timer.cancel()
        raise
    if task.done():
        timer.cancel()
        return task.result()
    task.cancel()
    # gather, not suppress(CancelledError): a cancellation of *this* coroutine must propagate.
    await asyncio.gather(task, return_exceptions=True)
    raise TimeoutError(f"timed out after {seconds:g} s")


def next_fire(job: JobSettings, after: float, started_at: float) -> float | None:
    """Return the first fire time of `job` after `after`, or None when it never fires again."""
    if job.schedule == "interval":
        assert job.interval_seconds is not None
        step, offset = job.interval_seconds, job.delay_seconds  # offset: after each multiple
        return (math.floor((after - offset) / step) + 1) * step + offset
    if job.schedule == "daily":
        assert job.daily_time is not None
        hh, mm = (int(x) for x in job.daily_time.split(":"))
        day = to_datetime(after)
        fire = day.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if fire.timestamp() <= after:
            fire += timedelta(days=1)
        return fire.timestamp()
    at = started_at + job.delay_seconds
    return at if at > after else None


def first_fire(job: JobSettings, now: float) -> float | None:
    """Return the first fire time at start-up: aligned slots include `now` itself."""
    if job.schedule == "once":
        return now + job.delay_seconds
    return next_fire(job, now - 1e-6, now)


@dataclass
class JobState:
    """What the seeds' job registry tracks, per job."""

    name: str
    running: bool = False
    last_start: float | None = None
    last_duration: float | None = None
    last_status: str | None = None
    last_result: dict[str, Any] | None = None
    runs: int = 0
    errors: int = 0
    skips: int = 0
    coalesced: int = 0
    last_error: str | None = None
    next_run: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the state as JSON-able data (times as ISO-8601 UTC)."""
        finished = self.runs + self.errors
        return {
            "name": self.name,
            "running": self.running,
            "last_start": utc_iso(self.last_start),
            "last_duration": self.last_duration,
            "last_status": self.last_status,
            "last_result": self.last_result,
            "runs": self.runs,
            "errors": self.errors,
            "skips": self.skips,
            "coalesced": self.coalesced,
            "success_rate": round(100.0 * self.runs / finished, 2) if finished else None,
            "last_error": self.last_error,
            "next_run": utc_iso(self.next_run),
        }


@dataclass
class Job:
    settings: JobSettings
    func: JobFunc
    state: JobState = field(init=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set in the same loop turn as the fire that starts a run (before its task takes `lock`),
    # so a second fire or trigger in that turn sees the job as running and is skipped.
    claimed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.state = JobState(self.settings.name)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def busy(self) -> bool:
        """Tell whether a run is claimed or holds the lock."""
        return self.claimed or self.lock.locked()


def select_jobs(jobs: Iterable[JobSettings], include: set[str],
                exclude: set[str]) -> list[JobSettings]:
    """Return the enabled jobs whose tags pass --include-tags / --exclude-tags."""
    out = []
    for job in jobs:
        tags = set(job.tags)
        if not job.enabled:
            continue
        if include and not tags & include:
            continue
        if exclude and tags & exclude:
            continue
        out.append(job)
    return out


class Scheduler:
    """Fires jobs on time; one long-running `run()`."""

    def __init__(self, jobs: Iterable[Job], clock: Clock, bus: Bus, *,
                 hold_clock: bool = False, gate: TradingGate | None = None) -> None:
        self.jobs = {j.name: j for j in jobs}
        self._gate = gate  # while halted (engine.halt) no job fires
        self._clock = clock
        self._bus = bus
        self._hold_clock = hold_clock  # replay: simulated time waits for running jobs
        self._running: set[asyncio.Task[None]] = set()
        self._firing = True
        self._started_at: float | None = None
        self.paused = False
        # Set once every job has registered its first fire; until then `run()` holds a replay's
        # clock, so simulated time cannot pass a first fire the scheduler has yet to register.
        self.armed, self._unarmed = asyncio.Event(), 0
        self._release_arming: Callable[[], None] | None = None

    # ------------------------------------------------------------------ control

    def pause(self) -> bool:
        """Stop scheduled fires (manual triggers still run); return True if it changed."""
        changed = not self.paused
        self.paused = True
        if changed:
            log.info("scheduler.paused")
        return changed

    def resume(self) -> bool:
        """Resume scheduled fires; return True if it changed."""
        changed = self.paused
        self.paused = False
        if changed:
            log.info("scheduler.resumed")
        return changed

    def toggle_pause(self) -> bool:
        """Flip pause/resume; return the new paused state."""
        if self.paused:
            self.resume()
        else:
            self.pause()
        return self.paused

    def stop_firing(self) -> None:
        """Fire nothing more, scheduled or manual (shutdown)."""
        self._firing = False

    @property
    def busy(self) -> bool:
        return any(j.busy for j in self.jobs.values())

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` clock seconds for running jobs; return True if none is left."""
        if not self._running:
            return True
        try:
            await with_deadline(self._clock, asyncio.wait(set(self._running)), timeout)
        except TimeoutError:
            return False
        return not self._running

    async def cancel_running(self) -> None:
        """Cancel every running job and wait for them to record their end."""
        tasks = set(self._running)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def states(self) -> list[dict[str, Any]]:
        return [j.state.as_dict() for j in self.jobs.values()]

    # ------------------------------------------------------------------ firing

    async def trigger(self, name: str, *, trigger: str = "manual",
                      wait: bool = True) -> tuple[bool, str, dict[str, Any]]:
        """Run `name` now through its lock: (started, reason it did not, summary)."""
        job = self.jobs.get(name)
        if job is None:
            return False, f"unknown job {name!r}", {}
        if not self._firing:
            return False, "engine is shutting down", {}
        if self._gate is not None and self._gate.halted:
            return False, f"trading {self._gate.describe()}", {}
        if job.busy:
            self._skip(job, trigger, "still_running")
            return False, f"{name} is already running", {}
        task = self._start(job, trigger)
        if not wait:
            return True, "", {}
        await asyncio.shield(task)
        return True, "", dict(job.state.last_result or {})

    def _skip(self, job: Job, trigger: str, reason: str) -> None:
        job.state.skips += 1
        now = self._clock.time()
        log.warning("job.skipped", job=job.name, reason=reason, trigger=trigger,
                    skips=job.state.skips)
        metrics.JOB_RUNS.labels(job.name, "skipped").inc()
        self._bus.publish(JobRun(job=job.name, trigger=_trigger_kind(trigger), started_at=now,
                                 finished_at=now, status="skipped", error=reason))

    def _start(self, job: Job, trigger: str) -> asyncio.Task[None]:
        job.claimed = True  # synchronously: the task takes the lock only when it first runs
        # A replay's clock is held from this loop turn (not the task's first step) to the run's
        # end: simulated time never moves between a fire and its run, whatever runs in between.
        release = self._clock.hold() if self._hold_clock else None
        task = asyncio.create_task(self._execute(job, trigger), name=f"job:{job.name}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        # Done callbacks, not a `finally`: they also run for a task cancelled before it started.
        task.add_done_callback(lambda _: setattr(job, "claimed", False))
        if release is not None:
            task.add_done_callback(lambda _: release())
        return task

    async def _execute(self, job: Job, trigger: str) -> None:
        async with job.lock:
            await self._execute_locked(job, trigger)

    async def _execute_locked(self, job: Job, trigger: str) -> None:
        state = job.state
        start = self._clock.time()
        wall_start = time.perf_counter()  # the duration is wall time, even in a replay
        state.running, state.last_start = True, start
        status: Literal["ok", "failed", "timeout", "cancelled"] = "ok"
        error: str | None = None
        result: Any = None
        log.info("job.started", job=job.name, trigger=trigger)
        try:
            result = await with_deadline(self._clock, job.func(trigger),
                                         job.settings.timeout_seconds)
        except TimeoutError:
            status, error = "timeout", f"timed out after {job.settings.timeout_seconds:g} s"
        except asyncio.CancelledError:
            status, error = "cancelled", "cancelled at shutdown"
            raise
        except Exception as exc:  # a failing run never stops the scheduler
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("job.failed", job=job.name)
        finally:
            end = self._clock.time()
            state.running = False
            state.last_duration = round(time.perf_counter() - wall_start, 6)
            state.last_status = status
            if status == "ok":
                state.runs += 1
                state.last_result = result or {}
                if isinstance(result, dict) and result.get("status") == "failed":
                    state.last_error = str(result.get("error"))
            else:
                state.errors += 1
                state.last_error = error
                state.last_result = {"status": status, "error": error}
            metrics.JOB_RUNS.labels(job.name, status).inc()
            self._bus.publish(JobRun(job=job.name, trigger=_trigger_kind(trigger),
                                     started_at=start, finished_at=end, status=status,
                                     error=error, summary=_jsonable(result)))
            level = "info" if status == "ok" else "error"
            getattr(log, level)("job.finished", job=job.name, status=status,
                                duration_s=state.last_duration, error=error)

    async def start(self, spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        """Start `run()` through `spawn` (e.g. a task group's `create_task`); return once every
        job has registered its first fire, a replay's clock held from this call until then."""
        release = self._clock.hold() if self._hold_clock else None
        try:
            spawn(self.run())
            await self.armed.wait()
        finally:
            if release is not None:
                release()

    async def run(self) -> None:
        """Fire every job on its schedule until cancelled."""
        self._started_at = self._clock.time()
        self._unarmed = len(self.jobs)
        if self._hold_clock and self._unarmed:
            self._release_arming = self._clock.hold()
        if not self._unarmed:
            self.armed.set()
        try:
            async with asyncio.TaskGroup() as tg:
                for job in self.jobs.values():
                    tg.create_task(self._loop(job), name=f"schedule:{job.name}")
            await asyncio.get_running_loop().create_future()  # nothing left: idle until cancelled
        finally:
            self._firing = False
            if self._release_arming is not None:  # stopped before every job was armed
                self._release_arming()
                self._release_arming = None

    async def _loop(self, job: Job) -> None:
        assert self._started_at is not None
        due = first_fire(job.settings, self._clock.time())
        job.state.next_run = due
        self._armed_one()  # the sleep below registers `due` in this same loop turn
        while due is not None:
            await self._clock.sleep_until(due)
            now = self._clock.time()
            missed = self._missed_fires(job.settings, due, now)
            if missed:
                job.state.coalesced += missed
                log.warning("job.coalesced", job=job.name, missed=missed,
                            late_s=round(now - due, 3))
            if not self._firing:
                return
            if self.paused:
                log.info("job.paused_fire", job=job.name)
            elif self._gate is not None and self._gate.halted:
                log.warning("job.halted_fire", job=job.name, reason=self._gate.reason)
            elif job.busy:
                self._skip(job, "schedule", "still_running")
            else:
                self._start(job, "once" if job.settings.schedule == "once" else "schedule")
            due = next_fire(job.settings, now, self._started_at)
            job.state.next_run = due

    def _armed_one(self) -> None:
        self._unarmed -= 1
        if self._unarmed == 0:
            self.armed.set()
            if self._release_arming is not None:
                self._release_arming()
                self._release_arming = None

    @staticmethod
    def _missed_fires(job: JobSettings, due: float, now: float) -> int:
        """Count fires that fell between `due` and `now` and are folded into this one."""
        if job.schedule == "interval" and job.interval_seconds:
            return int((now - due) // job.interval_seconds)
        if job.schedule == "daily":
            return int((now - due) // 86_400)
        return 0


def _trigger_kind(trigger: str) -> Any:
    return trigger if trigger in ("schedule", "manual", "once") else "manual"


def _jsonable(result: Any) -> dict[str, Any] | None:
    return result if isinstance(result, dict) else None


def utc_iso(ts: float | None) -> str | None:
    """Format epoch seconds as ISO-8601 UTC."""
    return None if ts is None else to_datetime(ts).isoformat()
