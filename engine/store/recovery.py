"""Recovery: the state the engine resumes from (after replaying the spill file).

An arena is everything since the latest run recorded with `fresh = true` (or since the first run).
`--fresh` starts a new arena without deleting anything: its RunStarted row (fresh) is the new
boundary, and recovery only reads rows whose id is newer than that row's id. Ids are UUIDv7,
ordered by the wall time they were made at, so the boundary holds whatever the engine clock read
(replays included) and rows of an older arena replayed late from the spill file stay in the old
arena. Within the arena, a trader's latest snapshot is the one with the greatest (ts, id).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import structlog

from engine.store.spill import replay_spill_file

log = structlog.get_logger("store")

_SNAPSHOT_FIELDS = (
    "trader", "cash", "margin", "unrealized_pnl", "equity", "realized_pnl", "fees", "funding",
    "peak_equity", "drawdown_pct", "return_pct", "positions", "state", "cause", "cycle_id", "ts",
    "id",
)


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """The persisted state of the current arena."""

    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # trader → the latest AccountSnapshot as a dict of its fields (positions a tuple of dicts,
    # state a dict, ts epoch seconds, id a UUID); PaperBroker.restore(trader, snapshot) takes it
    runs: int = 0  # runs recorded before this start, all arenas
    arena_runs: int = 0  # runs recorded in the current arena
    arena_run_id: uuid.UUID | None = None  # RunStarted.run_id of the run that began the arena
    last_cycle_id: str | None = None
    last_cycle_at: float | None = None  # finished_at of the last persisted cycle
    replayed_rows: int = 0  # spill-file rows written to Postgres before reading

    @property
    def empty(self) -> bool:
        """Tell whether there is nothing to resume (no account was ever persisted)."""
        return not self.accounts


async def load_state(dsn: str, *, spill_path: str | None = None) -> RecoveredState:
    """Replay the spill file if given, then read the current arena's latest state."""
    replayed = 0
    if spill_path is not None:
        replayed = await replay_spill_file(dsn, spill_path)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await _read(conn, replayed)
    finally:
        await conn.close()


async def _read(conn: asyncpg.Connection, replayed: int) -> RecoveredState:
    runs = await conn.fetchval("SELECT count(*) FROM runs")
    arena = await conn.fetchrow(
        "SELECT id, run_id, started_at FROM runs WHERE fresh ORDER BY id DESC LIMIT 1"
    )
    if arena is None:  # never started fresh: the arena began with the first run
        arena = await conn.fetchrow("SELECT id, run_id, started_at FROM runs ORDER BY id LIMIT 1")
        since = None
    else:
        since = arena["id"]
    arena_runs = await conn.fetchval(
        "SELECT count(*) FROM runs WHERE $1::uuid IS NULL OR id >= $1", since
    )
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (trader) {', '.join(_SNAPSHOT_FIELDS)} FROM account_snapshots "
        "WHERE $1::uuid IS NULL OR id > $1 ORDER BY trader, id DESC",
        since,
    )
    cycle = await conn.fetchrow(
        "SELECT cycle_id, finished_at FROM cycles WHERE $1::uuid IS NULL OR id > $1 "
        "ORDER BY id DESC LIMIT 1",
        since,
    )
    state = RecoveredState(
        accounts={r["trader"]: _snapshot_dict(r) for r in rows},
        runs=runs,
        arena_runs=arena_runs,
        arena_run_id=arena["run_id"] if arena else None,
        last_cycle_id=cycle["cycle_id"] if cycle else None,
        last_cycle_at=cycle["finished_at"].timestamp() if cycle else None,
        replayed_rows=replayed,
    )
    log.info("store.state_loaded", traders=len(state.accounts), runs=runs,
             arena_runs=arena_runs, last_cycle_id=state.last_cycle_id, replayed_rows=replayed)
    return state


def _snapshot_dict(record: asyncpg.Record) -> dict[str, Any]:
    snap = dict(record)
    snap["positions"] = tuple(orjson.loads(snap["positions"]))
    snap["state"] = orjson.loads(snap["state"])
    snap["ts"] = snap["ts"].timestamp()
    return snap
