"""Recovery: the spill file that outlives outages, and the state the engine resumes from.

`SpillFile` is the writer's overflow: an append-only JSON-lines file (`{"t": table, "r": row}`,
ids kept) replayed into Postgres in order; replaying twice is harmless since rows are inserted
with `ON CONFLICT (id) DO NOTHING`, so a crash mid-replay only means replaying again.

An arena is everything since the latest run recorded with `fresh = true` (or since the first run).
`--fresh` starts a new arena without deleting anything: its RunStarted row (fresh) is the new
boundary, and recovery only reads rows whose id is newer than that row's id. Ids are UUIDv7,
ordered by the wall time they were made at, so the boundary holds whatever the engine clock read
(replays included) and rows of an older arena replayed late from the spill file stay in the old
arena. Within the arena, a trader's latest snapshot is the one with the greatest (ts, id).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import structlog

from engine.store import Row, prepare_connection, row_from_json, row_to_json, write_batches

log = structlog.get_logger("store")

REPLAY_CHUNK_ROWS = 10_000


class SpillFile:
    """Append-only JSON-lines file of rows waiting for Postgres; `pending` counts its rows."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rejected_path = self.path.with_name(self.path.stem + ".rejected.jsonl")
        self.pending = 0
        self.rejected = 0
        self._offset = 0  # bytes already replayed

    def refresh(self) -> None:
        """Count the rows in the file (at start, or after someone else replayed it)."""
        self._offset = 0
        self.pending = 0
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
            last = b"\n"
            while chunk := f.read(1 << 20):
                self.pending += chunk.count(b"\n")
                last = chunk[-1:]
            if last != b"\n":
                self.pending += 1  # a torn last line from a crash mid-append

    def append(self, items: Iterable[tuple[str, Row]]) -> int:
        """Append rows durably (fsync); return how many."""
        data = b"".join(row_to_json(table, row) + b"\n" for table, row in items)
        if not data:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # end a torn line so it cannot swallow the next one
                    data = b"\n" + data
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        n = data.count(b"\n") - data.startswith(b"\n")
        self.pending += n
        return n

    def read(self, max_rows: int) -> tuple[int, int, list[tuple[str, Row]]]:
        """Return (end offset, lines read, decoded rows) of the next unreplayed lines."""
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            return self._offset, 0, []
        with f:
            f.seek(self._offset)
            lines = list(islice(f, max_rows))
        items = []
        for i, line in enumerate(lines):
            try:
                items.append(row_from_json(line))
            except ValueError as exc:
                log.error("spill.bad_line", path=str(self.path), line_at=self._offset + i,
                          error=str(exc))
        return self._offset + sum(map(len, lines)), len(lines), items

    def consumed(self, end: int, lines: int) -> None:
        """Mark lines up to `end` replayed; empty the file once all of it is."""
        self._offset = end
        self.pending = max(0, self.pending - lines)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if self._offset >= size:
            if size:
                os.truncate(self.path, 0)
                log.info("spill.emptied", path=str(self.path))
            self._offset = 0
            self.pending = 0

    def reject(self, table: str, row: Row, exc: BaseException) -> None:
        """Keep a row Postgres refused for what it contains, with the reason, for inspection."""
        self.rejected += 1
        self.rejected_path.parent.mkdir(parents=True, exist_ok=True)
        with self.rejected_path.open("ab") as f:
            f.write(row_to_json(table, row)[:-1] + b',"error":' + orjson.dumps(repr(exc)) + b"}\n")
        log.error("store.row_rejected", table=table, id=str(row[0]), error=repr(exc),
                  path=str(self.rejected_path))


async def replay_chunk(
    conn: asyncpg.Connection, spill: SpillFile, limit_s: float
) -> tuple[int, int]:
    """Write the next chunk of the spill file in one transaction; return (rows, rows new)."""
    end, lines, items = spill.read(REPLAY_CHUNK_ROWS)
    batches: dict[str, list[Row]] = {}
    for table, row in items:
        batches.setdefault(table, []).append(row)
    new = await write_batches(conn, batches, limit_s=limit_s, reject=spill.reject) if items else 0
    spill.consumed(end, lines)
    return len(items), new


async def replay_spill_file(dsn: str, path: str | Path, *, limit_s: float = 60.0) -> int:
    """Write every row of the spill file to Postgres, then empty it; return how many were new."""
    spill = SpillFile(path)
    spill.refresh()
    if not spill.pending:
        return 0
    conn = await asyncpg.connect(dsn, timeout=limit_s)
    new = 0
    try:
        await prepare_connection(conn)
        while spill.pending:
            new += (await replay_chunk(conn, spill, limit_s))[1]
    finally:
        await conn.close()
    log.info("spill.replayed", new=new, path=str(path))
    return new

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
    arena_started_at: float | None = None
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
        arena_started_at=arena["started_at"].timestamp() if arena else None,
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
