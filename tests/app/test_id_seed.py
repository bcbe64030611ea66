"""Across a restart: new ids sort after every persisted row, even if the wall clock went back."""

from __future__ import annotations

import time
import uuid

import asyncpg
import pytest
import uuid_utils

from engine import events
from engine.app.build import seed_from
from engine.events import new_id
from engine.store.database import migrate


async def test_ids_after_a_restart_sort_after_the_newest_persisted_row(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "_last_id", events._last_id)  # restored after the test
    await migrate(database_url)
    # A fill written by an earlier run whose clock was two hours ahead of ours.
    ahead = uuid.UUID(int=uuid_utils.uuid7(nanoseconds=time.time_ns() + 7_200 * 10**9).int)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO job_runs (id, job, trigger, started_at, finished_at, duration_ms, status) "
            "VALUES ($1, 'trading_cycle', 'manual', now(), now(), 0, 'ok')", ahead)
        await seed_from(database_url)
        assert new_id() > ahead
    finally:
        await conn.close()
