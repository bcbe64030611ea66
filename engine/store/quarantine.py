"""The quarantine: rows the database refuses, and the operator's way past them.

A refused row halts trading (engine.store.errors). The writer records it in the `quarantine`
table (migration 0004) with its table, its values and the database's error, and retries.
`run.py db --quarantine ID` marks it quarantined; at its next retry the writer takes that row out
of the event stream (it stays in the quarantine table), logs `writer.quarantined`, alerts, and
writes on. A row that can be fixed instead (a trigger dropped, a constraint relaxed) simply
commits at a retry and trading resumes.
"""

from __future__ import annotations

import uuid

import asyncpg
import structlog

from engine.store.errors import RowRefused, describe
from engine.store.rows import row_to_json

log = structlog.get_logger("store")


async def record_refused(conn: asyncpg.Connection, refused: RowRefused) -> None:
    """Record (or update) the refused row in the quarantine table; nothing moves yet."""
    await conn.execute(
        "INSERT INTO quarantine (id, table_name, row_json, error) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (id) DO UPDATE SET error = EXCLUDED.error",
        refused.row[0], refused.table, row_to_json(refused.table, refused.row).decode(),
        describe(refused.cause))


async def take_if_quarantined(conn: asyncpg.Connection, refused: RowRefused) -> bool:
    """Tell whether an operator quarantined the refused row; if so, mark it moved."""
    moved = await conn.fetchval(
        "UPDATE quarantine SET moved_at = now() WHERE id = $1 AND quarantined_at IS NOT NULL "
        "RETURNING id", refused.row[0])
    if moved is None:
        return False
    log.warning("writer.quarantined", table=refused.table, id=refused.row_id,
                error=describe(refused.cause),
                detail="row taken out of the event stream; kept in the quarantine table")
    return True


async def quarantine(dsn: str, row_id: str) -> str:
    """Mark a refused row quarantined (the `run.py db --quarantine ID` command); say what it did.

    Raise ValueError when no refused row has that id.
    """
    try:
        key = uuid.UUID(row_id)
    except ValueError:
        raise ValueError(f"{row_id!r} is not a row id (a UUID)") from None
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "UPDATE quarantine SET quarantined_at = coalesce(quarantined_at, now()) "
            "WHERE id = $1 RETURNING table_name, error, moved_at IS NOT NULL AS moved", key)
    finally:
        await conn.close()
    if row is None:
        raise ValueError(f"no refused row has id {row_id} (see `writer.row_refused` in the log)")
    log.warning("store.quarantine_requested", id=row_id, table=row["table_name"],
                error=row["error"])
    if row["moved"]:
        return f"row {row_id} of {row['table_name']} is already in quarantine"
    return (f"row {row_id} of {row['table_name']} quarantined ({row['error']}); the writer "
            "takes it out of the event stream at its next retry and trading resumes")
