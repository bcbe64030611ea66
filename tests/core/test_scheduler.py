"""The scheduler on a simulated clock: alignment, overlap, coalescing, timeouts, isolation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.bus import Bus
from engine.clock import SimClock
from engine.events import JobRun
from engine.scheduler import Job, Scheduler, first_fire, next_fire, select_jobs
from engine.settings import JobSettings


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def interval_job(
    name: str = "cycle", every: float = 300, timeout: float = 240, **kw
) -> JobSettings:
    return JobSettings(
        name=name,
        run="trading_cycle",
        schedule="interval",
        interval_seconds=every,
        timeout_seconds=timeout,
        **kw,
    )


class Recorder:
    """A job body that records when it ran and optionally takes clock time or fails."""

    def __init__(self, clock: SimClock, takes: float = 0.0, fail_on: set[int] | None = None):
        self.clock = clock
        self.takes = takes
        self.fail_on = fail_on or set()
        self.starts: list[float] = []
        self.triggers: list[str] = []

    async def __call__(self, trigger: str) -> dict:
        self.starts.append(self.clock.time())
        self.triggers.append(trigger)
        n = len(self.starts)
        if self.takes:
            await self.clock.sleep(self.takes)
        if n in self.fail_on:
            raise RuntimeError(f"boom {n}")
        return {"n": n}


async def start(scheduler: Scheduler, clock: SimClock):
    import asyncio

    task = asyncio.create_task(scheduler.run())
    await clock.settle()
    return task


async def stop(task) -> None:
    import asyncio

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_interval_fires_aligned_to_wall_clock_multiples(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T12:03:17"))
    body = Recorder(clock)
    sched = Scheduler([Job(interval_job(), body)], clock, bus)
    task = await start(sched, clock)
    await clock.advance_to(ts("2026-01-01T12:16:00"))
    await stop(task)
    assert body.starts == [
        ts("2026-01-01T12:05:00"),
        ts("2026-01-01T12:10:00"),
        ts("2026-01-01T12:15:00"),
    ]


async def test_start_on_a_slot_fires_immediately(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T12:05:00"))
    body = Recorder(clock)
    sched = Scheduler([Job(interval_job(), body)], clock, bus)
    task = await start(sched, clock)
    await stop(task)
    assert body.starts == [ts("2026-01-01T12:05:00")]


async def test_a_simulated_day_of_cycles_runs_288_times(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T00:00:00"))
    body = Recorder(clock, takes=2.0)
    sched = Scheduler([Job(interval_job(), body)], clock, bus)
    task = await start(sched, clock)
    await clock.advance_to(ts("2026-01-01T23:59:59"))
    await stop(task)
    assert len(body.starts) == 288
    assert sched.jobs["cycle"].state.runs == 288


async def test_fire_while_running_is_skipped_and_counted(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T00:00:00"))
    body = Recorder(clock, takes=400)
    sub = bus.subscribe("t", [JobRun], policy="block")
    sched = Scheduler([Job(interval_job(timeout=1000), body)], clock, bus)
    task = await start(sched, clock)
    await clock.advance_to(ts("2026-01-01T00:09:00"))
    await stop(task)
    # 00:00 runs until 00:06:40, so the 00:05 fire is skipped; 00:10 not reached yet.
    assert body.starts == [ts("2026-01-01T00:00:00")]
    state = sched.jobs["cycle"].state
    assert (state.runs, state.skips) == (1, 1)
    statuses = [e.status for e in sub.drain()]
    assert statuses == ["skipped", "ok"]


async def test_missed_fires_coalesce_into_one_run(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T00:01:00"))
    body = Recorder(clock)
    sched = Scheduler([Job(interval_job(), body)], clock, bus)
    task = await start(sched, clock)
    clock.set_time(ts("2026-01-01T00:21:30"))  # the machine slept through four fires
    await clock.advance(0)
    await clock.advance_to(ts("2026-01-01T00:24:00"))
    await stop(task)
    assert body.starts == [ts("2026-01-01T00:21:30")]
    assert sched.jobs["cycle"].state.coalesced == 3
    assert sched.jobs["cycle"].state.next_run == ts("2026-01-01T00:25:00")


async def test_run_past_timeout_is_cancelled_and_recorded_failed(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T00:00:00"))
    body = Recorder(clock, takes=100)
    sched = Scheduler([Job(interval_job(timeout=30), body)], clock, bus)
    task = await start(sched, clock)
    await clock.advance(60)
    await stop(task)
    state = sched.jobs["cycle"].state
    assert (state.runs, state.errors, state.last_status) == (0, 1, "timeout")
    assert state.last_error == "timed out after 30 s"
    assert not state.running and not sched.busy


async def test_failing_run_never_stops_the_scheduler(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T00:00:00"))
    body = Recorder(clock, fail_on={1})
    sched = Scheduler([Job(interval_job(), body)], clock, bus)
    task = await start(sched, clock)
    await clock.advance_to(ts("2026-01-01T00:10:00"))
    await stop(task)
    state = sched.jobs["cycle"].state
    assert len(body.starts) == 3
    assert (state.runs, state.errors) == (2, 1)
    assert state.last_error == "RuntimeError: boom 1"


async def test_pause_stops_scheduled_fires_but_not_manual_triggers(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T00:00:30"))
    body = Recorder(clock)
    sched = Scheduler([Job(interval_job(), body)], clock, bus)
    task = await start(sched, clock)
    sched.pause()
    await clock.advance_to(ts("2026-01-01T00:11:00"))
    started, reason, summary = await sched.trigger("cycle")
    assert (started, reason, summary) == (True, "", {"n": 1})
    sched.resume()
    await clock.advance_to(ts("2026-01-01T00:15:00"))
    await stop(task)
    assert body.starts == [ts("2026-01-01T00:11:00"), ts("2026-01-01T00:15:00")]
    assert body.triggers == ["manual", "schedule"]


async def test_manual_trigger_while_running_is_refused(bus: Bus) -> None:
    import asyncio

    clock = SimClock(ts("2026-01-01T00:00:30"))
    body = Recorder(clock, takes=50)
    sched = Scheduler([Job(interval_job(), body)], clock, bus)
    first = asyncio.create_task(sched.trigger("cycle"))
    await clock.settle()
    started, reason, _ = await sched.trigger("cycle")
    assert (started, reason) == (False, "cycle is already running")
    await clock.advance(50)
    assert (await first)[0] is True
    assert sched.jobs["cycle"].state.skips == 1


async def test_daily_job_fires_at_its_utc_time_each_day(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T08:00:00"))
    body = Recorder(clock)
    job = JobSettings(name="daily", run="health_check", schedule="daily", daily_time="07:30")
    sched = Scheduler([Job(job, body)], clock, bus)
    task = await start(sched, clock)
    await clock.advance_to(ts("2026-01-03T12:00:00"))
    await stop(task)
    assert body.starts == [ts("2026-01-02T07:30:00"), ts("2026-01-03T07:30:00")]


async def test_once_job_fires_once_after_its_delay(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T08:00:00"))
    body = Recorder(clock)
    job = JobSettings(name="boot", run="health_check", schedule="once", delay_seconds=5)
    sched = Scheduler([Job(job, body)], clock, bus)
    task = await start(sched, clock)
    await clock.advance(3600)
    await stop(task)
    assert body.starts == [ts("2026-01-01T08:00:05")]
    assert body.triggers == ["once"]
    assert sched.jobs["boot"].state.next_run is None


async def test_state_reports_the_seeds_job_registry_fields(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T00:00:00"))
    body = Recorder(clock, takes=1.5)
    sched = Scheduler([Job(interval_job(), body)], clock, bus)
    task = await start(sched, clock)
    await clock.advance(10)
    await stop(task)
    (state,) = sched.states()
    # The duration is wall time: 1.5 simulated seconds took far less.
    assert 0 < state.pop("last_duration") < 1.5
    assert state == {
        "name": "cycle",
        "running": False,
        "last_start": "2026-01-01T00:00:00+00:00",
        "last_status": "ok",
        "last_result": {"n": 1},
        "runs": 1,
        "errors": 0,
        "skips": 0,
        "coalesced": 0,
        "success_rate": 100.0,
        "last_error": None,
        "next_run": "2026-01-01T00:05:00+00:00",
    }


def test_tags_select_jobs() -> None:
    jobs = [
        interval_job("a", tags=("trading",)),
        interval_job("b", tags=("ops",)),
        interval_job("c", tags=("ops", "heavy")),
        interval_job("d", enabled=False),
    ]
    assert [j.name for j in select_jobs(jobs, set(), set())] == ["a", "b", "c"]
    assert [j.name for j in select_jobs(jobs, {"ops"}, set())] == ["b", "c"]
    assert [j.name for j in select_jobs(jobs, set(), {"heavy"})] == ["a", "b"]


def test_next_fire_helpers() -> None:
    job = interval_job(every=900)
    assert first_fire(job, ts("2026-01-01T00:15:00")) == ts("2026-01-01T00:15:00")
    assert next_fire(job, ts("2026-01-01T00:15:00"), 0) == ts("2026-01-01T00:30:00")


def test_an_interval_with_a_delay_fires_that_long_after_each_multiple() -> None:
    job = interval_job(every=300).model_copy(update={"delay_seconds": 2.0})
    assert first_fire(job, ts("2026-01-01T00:05:00")) == ts("2026-01-01T00:05:02")
    assert first_fire(job, ts("2026-01-01T00:05:02")) == ts("2026-01-01T00:05:02")
    assert next_fire(job, ts("2026-01-01T00:05:02"), 0) == ts("2026-01-01T00:10:02")
    assert next_fire(job, ts("2026-01-01T00:09:59"), 0) == ts("2026-01-01T00:10:02")


async def test_two_triggers_in_one_loop_turn_run_once_and_count_a_skip(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T00:00:30"))
    body = Recorder(clock, takes=50)
    sub = bus.subscribe("t", [JobRun], policy="block")
    sched = Scheduler([Job(interval_job(), body)], clock, bus)
    # Both calls run before the first run's task had a chance to take the job's lock.
    first = await sched.trigger("cycle", wait=False)
    second = await sched.trigger("cycle", wait=False)
    assert first == (True, "", {})
    assert second == (False, "cycle is already running", {})
    assert sched.busy
    await clock.advance(50)
    await clock.settle()
    assert body.starts == [ts("2026-01-01T00:00:30")]
    assert (sched.jobs["cycle"].state.runs, sched.jobs["cycle"].state.skips) == (1, 1)
    assert [e.status for e in sub.drain()] == ["skipped", "ok"]
    assert not sched.busy


async def test_a_run_cancelled_before_it_started_frees_the_job(bus: Bus) -> None:
    clock = SimClock(ts("2026-01-01T00:00:30"))
    body = Recorder(clock)
    sched = Scheduler([Job(interval_job(), body)], clock, bus)
    await sched.trigger("cycle", wait=False)
    await sched.cancel_running()
    assert body.starts == []
    assert not sched.busy
    started, _, summary = await sched.trigger("cycle")
    assert (started, summary) == (True, {"n": 1})
