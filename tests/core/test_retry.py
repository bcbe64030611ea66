"""The one back-off helper: doubling from the floor, capped, jittered, on the engine clock."""

from __future__ import annotations

import asyncio
import random

import pytest

from engine.clock import SimClock
from engine.retry import Backoff, backoff_delay


def test_delays_double_from_the_floor_up_to_the_cap_within_the_jitter_band() -> None:
    rng = random.Random(3)
    for attempt, base in enumerate([1, 2, 4, 8, 16, 32, 60, 60, 60]):
        for _ in range(200):
            delay = backoff_delay(attempt, 1.0, 60.0, rng)
            assert base / 2 <= delay <= base


def test_jitter_spreads_the_delays_of_one_attempt() -> None:
    rng = random.Random(5)
    delays = {round(backoff_delay(4, 1.0, 60.0, rng), 6) for _ in range(50)}
    assert len(delays) == 50
    assert min(delays) < 10 < max(delays)


def test_a_huge_attempt_number_stays_at_the_cap() -> None:
    assert 30.0 <= backoff_delay(10_000, 0.5, 60.0, random.Random(1)) <= 60.0


def test_backoff_counts_failures_and_reset_starts_over() -> None:
    b = Backoff(1.0, 8.0, rng=random.Random(2))
    delays = [b.next_delay() for _ in range(5)]
    assert b.attempt == 5
    assert [0.5 <= delays[0] <= 1, 1 <= delays[1] <= 2, 2 <= delays[2] <= 4,
            4 <= delays[3] <= 8, 4 <= delays[4] <= 8] == [True] * 5
    b.reset()
    assert b.attempt == 0 and b.next_delay() <= 1.0


def test_same_seed_same_delays_and_the_global_random_is_untouched() -> None:
    random.seed(11)
    expected_global = random.random()
    random.seed(11)
    a = Backoff(1.0, 60.0, rng=random.Random(9))
    b = Backoff(1.0, 60.0, rng=random.Random(9))
    assert [a.next_delay() for _ in range(6)] == [b.next_delay() for _ in range(6)]
    assert random.random() == expected_global


async def test_wait_sleeps_the_delay_on_the_engine_clock() -> None:
    clock = SimClock(1000.0)
    b = Backoff(4.0, 60.0, rng=random.Random(1))
    task = asyncio.create_task(b.wait(clock))
    await clock.settle()
    assert not task.done()
    await clock.advance(4.0)
    delay = await task
    assert 2.0 <= delay <= 4.0
    assert b.attempt == 1


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(1.0, 0.0)
