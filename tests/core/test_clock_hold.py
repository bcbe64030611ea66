"""Simulated time never passes a timer that is about to be registered or work that is about to
run, whatever happens on the loop in between: `SimClock.hold` is taken in the loop turn that
decides (a fire, a scheduler starting) and released when that work is done or armed."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from engine.bus import Bus
from engine.clock import LiveClock, SimClock
from engine.scheduler import Job, Scheduler
from tests.core.test_scheduler import Recorder, interval_job, stop, ts

T0 = ts("2026-01-01T00:00:00")


async def replay(clock: SimClock, seconds: float, step: float) -> None:
    """Move time like `Replay.run` does: one `advance_to` per frame, nothing settled first."""
    k = 1
    while k * step <= seconds:
        await clock.advance_to(T0 + k * step)
        k += 1


async def test_a_hold_stops_time_until_released_from_anywhere() -> None:
    clock = SimClock(T0)
    release = clock.hold()
    assert clock.held
    mover = asyncio.create_task(clock.advance_to(T0 + 10))
    for _ in range(50):
        await asyncio.sleep(0)
    assert clock.time() == T0 and not mover.done()  # held: the replay waits, however long
    asyncio.get_running_loop().call_soon(release)
    await mover
    assert clock.time() == T0 + 10 and not clock.held
    release()  # a second release changes nothing
    assert not clock.held
    LiveClock().hold()()  # the wall clock has nothing to hold


async def test_time_cannot_pass_a_first_fire_the_scheduler_has_yet_to_register(bus: Bus) -> None:
    clock = SimClock(T0)
    body = Recorder(clock)
    sched = Scheduler([Job(interval_job(delay_seconds=1), body)], clock, bus, hold_clock=True)
    task = asyncio.create_task(sched.run())
    # Frames 2 s apart straight away: before, time reached T0+2 while the scheduler's job loop
    # was still a loop turn away from registering T0+1, and the first fire became T0+301.
    await replay(clock, 400, 2.0)
    await stop(task)
    assert body.starts == [T0 + 1, T0 + 301]


async def test_start_holds_time_until_every_job_is_armed_however_late_run_begins(
        bus: Bus) -> None:
    clock = SimClock(T0)
    cycle, sync = Recorder(clock), Recorder(clock)
    sched = Scheduler([Job(interval_job("cycle", delay_seconds=2), cycle),
                       Job(interval_job("sync", every=60, delay_seconds=1), sync)],
                      clock, bus, hold_clock=True)
    driver = asyncio.create_task(replay(clock, 130, 0.5))
    tasks: list[asyncio.Task[None]] = []

    async def late(run: Coroutine[Any, Any, None]) -> None:
        for _ in range(200):  # the scheduler's task is slow to get going (a busy loop)
            await asyncio.sleep(0)
        await run

    await sched.start(lambda run: tasks.append(asyncio.create_task(late(run))))
    assert sched.armed.is_set()
    await driver
    await stop(tasks[0])
    assert cycle.starts == [T0 + 2]
    assert sync.starts == [T0 + 1, T0 + 61, T0 + 121]
    assert not clock.held


async def test_a_fire_holds_time_from_its_own_loop_turn_until_the_run_ends(bus: Bus) -> None:
    clock = SimClock(T0)
    body = Recorder(clock)
    sched = Scheduler([Job(interval_job(), body)], clock, bus, hold_clock=True)
    await sched.trigger("cycle", wait=False)
    assert clock.held and body.starts == []  # held before the run's task has even started
    await clock.advance_to(T0 + 5)
    assert body.starts == [T0] and not clock.held


async def test_a_run_cancelled_before_it_started_releases_its_hold(bus: Bus) -> None:
    clock = SimClock(T0)
    sched = Scheduler([Job(interval_job(), Recorder(clock))], clock, bus, hold_clock=True)
    await sched.trigger("cycle", wait=False)
    assert clock.held
    await sched.cancel_running()
    assert not clock.held and not sched.busy


async def test_a_scheduler_stopped_before_it_armed_releases_its_hold(bus: Bus) -> None:
    clock = SimClock(T0)
    sched = Scheduler([Job(interval_job(), Recorder(clock))], clock, bus, hold_clock=True)
    task = asyncio.create_task(sched.run())
    await asyncio.sleep(0)  # run() has begun and holds the clock; its job loops have not run
    assert clock.held and not sched.armed.is_set()
    await stop(task)
    assert not clock.held


async def test_jump_to_moves_time_only_when_nothing_is_due_and_nothing_holds_it() -> None:
    clock = SimClock(T0)
    assert clock.jump_to(T0 + 1) and clock.time() == T0 + 1
    sleeper = asyncio.create_task(clock.sleep_until(T0 + 5))
    await asyncio.sleep(0)
    assert clock.jump_to(T0 + 4.9) and clock.time() == T0 + 4.9
    assert not clock.jump_to(T0 + 5) and clock.time() == T0 + 4.9  # a sleeper is due: advance_to
    await clock.advance_to(T0 + 5)
    await sleeper
    release = clock.hold()
    assert not clock.jump_to(T0 + 6) and clock.time() == T0 + 5  # held
    release()
    assert clock.jump_to(T0 + 6)
