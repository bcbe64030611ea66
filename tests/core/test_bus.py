"""The bus: typed routing, per-subscriber policy when full, back-pressure that never loses."""

from __future__ import annotations

import asyncio
from dataclasses import FrozenInstanceError

import pytest
from structlog.testing import capture_logs

from engine.bus import Bus
from engine.events import BookTicker, FundingPaid, JobRun


def tick(i: int) -> BookTicker:
    return BookTicker("BTCUSDT", 100.0 + i, 1.0, 101.0 + i, 1.0, float(i), float(i))


def test_events_are_frozen_and_slotted() -> None:
    t = tick(1)
    with pytest.raises(FrozenInstanceError):
        t.bid = 3.0  # type: ignore[misc]
    assert not hasattr(t, "__dict__")


def test_each_subscriber_gets_only_its_types_in_order(bus: Bus) -> None:
    ticks = bus.subscribe("ticks", [BookTicker])
    jobs = bus.subscribe("jobs", [JobRun])
    for i in range(3):
        bus.publish(tick(i))
    bus.publish(JobRun("j", "manual", 0, 1, "ok"))
    assert [e.bid for e in ticks.drain()] == [100.0, 101.0, 102.0]
    assert [e.job for e in jobs.drain()] == ["j"]


def test_display_subscriber_drops_the_oldest_and_counts(bus: Bus) -> None:
    display = bus.subscribe("display", [BookTicker], capacity=3, policy="drop_oldest")
    for i in range(5):
        bus.publish(tick(i))
    assert [e.event_time for e in display.drain()] == [2.0, 3.0, 4.0]
    assert display.dropped == 2
    assert bus.stats()["display"]["dropped"] == 2


def test_lossless_subscriber_keeps_everything_and_counts_backpressure(bus: Bus) -> None:
    writer = bus.subscribe("writer", [FundingPaid], capacity=2, policy="block")
    for i in range(5):
        bus.publish(FundingPaid("t", "BTCUSDT", 0.0001, 100.0, 10.0, float(i), float(i)))
    assert [e.amount for e in writer.drain()] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert writer.dropped == 0 and writer.backpressure == 3


async def test_producer_waits_for_capacity_until_the_writer_catches_up(bus: Bus) -> None:
    writer = bus.subscribe("writer", [JobRun], capacity=2, policy="block")
    for _ in range(3):
        bus.publish(JobRun("j", "manual", 0, 1, "ok"))
    waiting = asyncio.create_task(bus.wait_for_capacity())
    await asyncio.sleep(0)
    assert not waiting.done()
    writer.drain(2)
    await asyncio.sleep(0)
    assert waiting.done()


async def test_slow_dropping_subscriber_never_blocks_publishing(bus: Bus) -> None:
    bus.subscribe("slow", [BookTicker], capacity=1, policy="drop_oldest")
    for i in range(10_000):
        bus.publish(tick(i))
    await asyncio.wait_for(bus.wait_for_capacity(), 0.1)


async def test_get_batch_waits_for_the_first_event(bus: Bus) -> None:
    sub = bus.subscribe("w", [BookTicker], policy="block")
    task = asyncio.create_task(sub.get_batch(10))
    await asyncio.sleep(0)
    assert not task.done()
    bus.publish(tick(1))
    bus.publish(tick(2))
    assert [e.event_time for e in await task] == [1.0, 2.0]


async def test_a_handler_gets_its_events_in_order_at_the_next_flush_without_a_task(
        bus: Bus) -> None:
    got: list[list[object]] = []
    bus.subscribe("watch", [BookTicker], handler=lambda events: got.append(list(events)))
    bus.publish(tick(1))
    bus.publish(tick(2))
    assert got == []  # nothing is handled inside publish
    bus.flush()
    assert got == [[tick(1), tick(2)]]
    bus.flush()  # nothing queued: nothing handed over
    bus.publish(tick(3))
    await asyncio.sleep(0)  # unflushed, the loop's next turn hands it over
    assert got == [[tick(1), tick(2)], [tick(3)]]
    assert bus.wakeups == 0  # no task was woken for any of it


async def test_a_failing_handler_does_not_stop_the_others_and_what_handlers_publish_follows(
        bus: Bus) -> None:
    seen: list[object] = []

    def broken(events: list[object]) -> None:
        raise RuntimeError("boom")

    def relay(events: list[object]) -> None:  # publishes in turn, to another handler
        bus.publish_many(JobRun("j", "manual", e.recv_time, e.recv_time, "ok")  # type: ignore[attr-defined]
                         for e in events)

    bus.subscribe("broken", [BookTicker], handler=broken)
    bus.subscribe("relay", [BookTicker], handler=relay)
    bus.subscribe("jobs", [JobRun], handler=seen.extend)
    bus.publish(tick(5))
    bus.flush()
    assert [e.started_at for e in seen] == [5.0]  # type: ignore[attr-defined]


async def test_a_handler_that_publishes_to_itself_and_flushes_inside_loses_nothing(
        bus: Bus) -> None:
    """The queue handed to a handler is reused after it returns: a flush inside the handler
    must hand over a queue of its own, not the one being read."""
    got: list[float] = []

    def echo(events: list[object]) -> None:
        for e in events:
            got.append(e.event_time)  # type: ignore[attr-defined]
            if e.event_time < 3:  # type: ignore[attr-defined]
                bus.publish(tick(e.event_time + 1))  # type: ignore[attr-defined]
                bus.flush()

    bus.subscribe("echo", [BookTicker], handler=echo)
    with capture_logs() as logs:
        bus.publish(tick(1))
        bus.flush()
        bus.publish(tick(7))
        bus.flush()
    assert got == [1.0, 2.0, 3.0, 7.0]
    assert [e["event"] for e in logs] == []  # no handler failed on a queue changed under it


async def test_wakeups_count_subscriber_tasks_a_publish_woke(bus: Bus) -> None:
    sub = bus.subscribe("reader", [BookTicker])
    reader = asyncio.create_task(sub.get())
    await asyncio.sleep(0)  # the reader waits
    bus.publish(tick(1))
    bus.publish(tick(2))  # already woken: not counted twice
    assert bus.wakeups == 1
    assert await reader == tick(1)
    bus.publish(tick(3))  # nobody waiting: nothing woken
    assert bus.wakeups == 1
