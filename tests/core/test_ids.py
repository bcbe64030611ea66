"""Row ids: UUIDv7 from uuid-utils, strictly increasing in a process, even across a clock step."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest
import uuid_utils

from engine.events import monotonic_after, new_id


def test_new_id_is_a_stdlib_uuid_version_7_with_the_rfc_variant() -> None:
    ident = new_id()
    assert type(ident) is uuid.UUID  # asyncpg takes stdlib UUIDs
    assert ident.version == 7
    assert ident.variant == uuid.RFC_4122
    assert (ident.int >> 76) & 0xF == 0x7 and (ident.int >> 62) & 0b11 == 0b10


def test_the_timestamp_bits_hold_the_wall_clock_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    ident = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= ident.int >> 80 <= after + 1


def test_ids_made_in_a_burst_are_unique_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(50_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)


def test_an_id_made_after_a_clock_step_back_still_sorts_after_the_last_one() -> None:
    now_ns = time.time_ns()
    last = uuid_utils.uuid7(nanoseconds=now_ns).int
    stepped_back = uuid_utils.uuid7(nanoseconds=now_ns - 5_000_000_000).int  # clock 5 s back
    assert stepped_back < last
    value = monotonic_after(last, stepped_back)
    assert value == last + 1
    guarded = uuid.UUID(int=value)
    assert (guarded.version, guarded.variant) == (7, uuid.RFC_4122)
    assert guarded.int >> 80 == last >> 80  # the millisecond of the last id, not an earlier one


def test_the_guard_carries_into_the_next_millisecond_when_the_random_bits_run_out() -> None:
    ms = 1_767_225_600_000
    full = ms << 80 | 0x7 << 76 | 0xFFF << 64 | 0b10 << 62 | (1 << 62) - 1
    nxt = uuid.UUID(int=monotonic_after(full, full))
    assert nxt.int > full
    assert (nxt.int >> 80, nxt.version, nxt.variant) == (ms + 1, 7, uuid.RFC_4122)


def test_a_newer_id_passes_the_guard_unchanged() -> None:
    a, b = uuid_utils.uuid7().int, uuid_utils.uuid7().int
    assert monotonic_after(a, b) == b


def test_after_seeding_with_a_newer_persisted_id_new_ids_sort_after_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import events
    from engine.events import seed_ids

    monkeypatch.setattr(events, "_last_id", events._last_id)  # restored after the test

    future = uuid.UUID(int=uuid_utils.uuid7(nanoseconds=time.time_ns() + 3_600 * 10**9).int)
    seed_ids(future)  # rows persisted by a run whose wall clock was an hour ahead
    ident = new_id()
    assert ident > future and ident.version == 7 and ident.int >> 80 == future.int >> 80
    seed_ids(None)  # nothing persisted: no change
    assert new_id() > ident
