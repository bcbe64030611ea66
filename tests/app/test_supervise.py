"""Supervision: a crashing component is logged at error, shown, restarted with back-off, and after
too many crashes in a row stops the engine; never a silent hang. The crash is the writer's,
the OSError a full disk raises under its spill file, injected."""

from __future__ import annotations

import asyncio
import errno
import random
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from engine.app.supervise import Supervised, fatal
from engine.app.target import ControlTarget
from engine.clock import SimClock
from engine.halt import TradingGate
from engine.retry import Backoff
from tests.support.feed import eventually


class DiskFullWriter:
    """Stands in for the writer whose spill file sits on a full disk: each run() fails with the
    OSError a full disk raises (the real writer is in tests/store; this isolates supervision)."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        await asyncio.sleep(0)
        raise OSError(errno.ENOSPC, "No space left on device", "./data/spill.jsonl")

    def status(self) -> dict:
        return {"backlog": 0, "stalled_s": 0.0}


async def test_a_writer_dying_on_a_full_disk_is_logged_shown_restarted_then_fatal() -> None:
    clock = SimClock()
    writer = DiskFullWriter()
    reasons: list[str] = []
    sup = Supervised("writer", writer.run, clock, on_fatal=reasons.append, max_restarts=2,
                     backoff=Backoff(1.0, 4.0, rng=random.Random(3)))
    with capture_logs() as logs:
        task = asyncio.create_task(sup.run())
        try:
            for crash in (1, 2):
                await eventually(lambda crash=crash: sup.crashes == crash, f"crash {crash}")
                assert sup.state == "restarting"
                assert sup.last_error == ("OSError: [Errno 28] No space left on device: "
                                          "'./data/spill.jsonl'")
                wake = clock.next_wakeup()
                assert wake is not None
                await clock.advance_to(wake)  # the back-off, then the restart crashes again
            await asyncio.wait_for(task, 5)  # gave up: returned, the engine is told to stop
        finally:
            task.cancel()
    assert writer.runs == 3 and sup.crashes == 3
    assert sup.state == "failed" and not sup.healthy
    assert reasons == [f"writer crashed 3 times in a row: {sup.last_error}"]
    crashed = [e for e in logs if e["event"] == "task.crashed"]
    assert [(e["task"], e["log_level"], e["restart"]) for e in crashed] == [
        ("writer", "error", 1), ("writer", "error", 2)]
    assert 0.5 <= crashed[0]["retry_in_s"] <= 1.0 and 1.0 <= crashed[1]["retry_in_s"] <= 2.0
    assert isinstance(crashed[0]["exc_info"], OSError)
    [failed] = [e for e in logs if e["event"] == "task.failed"]
    assert failed["log_level"] == "error" and failed["crashes"] == 3


async def test_health_and_status_show_a_crashed_task() -> None:
    clock = SimClock()
    writer = DiskFullWriter()
    sup = Supervised("writer", writer.run, clock, on_fatal=lambda _: None,
                     backoff=Backoff(30.0, 60.0))
    task = asyncio.create_task(sup.run())
    await eventually(lambda: sup.crashes == 1, "the crash")
    engine = SimpleNamespace(  # the engine's parts ControlTarget.health reads
        tasks={"writer": sup}, crashes={}, state="running", writer=writer, gate=TradingGate(),
        options=SimpleNamespace(replay="sample"), feed=SimpleNamespace(
            status=lambda: {"connected": True, "stale": [], "state": "connected"}),
        settings=SimpleNamespace(database=SimpleNamespace(batch_rows=500,
                                                          unhealthy_after_seconds=10.0)))
    ok, detail = ControlTarget(engine).health()
    assert ok is False
    assert detail["problems"] == [f"writer restarting: {sup.last_error}"]
    assert detail["tasks"]["writer"]["state"] == "restarting"
    assert detail["tasks"]["writer"]["crashes"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sup.state == "stopped"


async def test_a_run_that_lasted_resets_the_crash_count() -> None:
    clock = SimClock()
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        await clock.sleep(120 if runs == 3 else 0)  # the third run is healthy for 2 minutes
        raise ConnectionError(f"boom {runs}")

    reasons: list[str] = []
    sup = Supervised("flaky", flaky, clock, on_fatal=reasons.append, max_restarts=2,
                     healthy_after_s=60, backoff=Backoff(1.0, 1.0))
    task = asyncio.create_task(sup.run())
    for _ in range(50):  # through every sleep: back-offs and the healthy run
        await clock.settle()
        if task.done():
            break
        wake = clock.next_wakeup()
        if wake is not None:
            await clock.advance_to(wake)
    await asyncio.wait_for(task, 5)
    # runs 1, 2 crash (restarts 1, 2); run 3 lasted: count reset to 1; runs 4, 5 → 2, 3 > 2.
    assert runs == 5 and sup.crashes == 5
    assert reasons == ["flaky crashed 3 times in a row: ConnectionError: boom 5"]


async def test_cancelled_while_down_the_final_step_still_runs() -> None:
    clock = SimClock()
    finals: list[str] = []

    async def crash() -> None:
        raise OSError("disk full")

    async def final() -> None:
        finals.append("flushed")

    sup = Supervised("writer", crash, clock, on_fatal=lambda _: None, final=final)
    task = asyncio.create_task(sup.run())
    await clock.settle()
    assert sup.state == "restarting"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finals == ["flushed"] and sup.state == "stopped"


async def test_a_fatal_task_is_logged_and_recorded_before_it_ends_the_group() -> None:
    async def broken() -> None:
        raise RuntimeError("broker state corrupt")

    crashes: dict[str, str] = {}
    with capture_logs() as logs, pytest.raises(ExceptionGroup):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(fatal("broker", broken(), crashes))
    assert crashes == {"broker": "RuntimeError: broker state corrupt"}
    [line] = [e for e in logs if e["event"] == "task.crashed"]
    assert (line["task"], line["fatal"], line["log_level"]) == ("broker", True, "error")
