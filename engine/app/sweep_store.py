"""A sweep's bookkeeping in Postgres (`sweep_runs`, migration 0007) and pruning runs' rows.

A run is `running` while its process runs, then `done` or `failed`; its run_id is chosen and
recorded before it starts. A sweep started again runs every key that is not `done` (a `running`
row is one an interrupted sweep left): the rows of the earlier attempt are removed first.
Pruning deletes a run's rows from every table that names a run (0007), its `runs` row, its
`sweep_runs` row and its directory of files.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from engine.app.sweep_plan import RunSpec
from engine.store.rows import TABLES

RUN_TABLES = (*(t for t in TABLES if t != "runs"), "llm_cache_hits", "quarantine")


async def finished_keys(conn: asyncpg.Connection, sweep: str) -> set[str]:
    """Return the keys of the sweep's runs that finished."""
    rows = await conn.fetch("SELECT key FROM sweep_runs WHERE sweep = $1 AND status = 'done'",
                            sweep)
    return {r["key"] for r in rows}


async def sweep_rows(conn: asyncpg.Connection, sweep: str) -> list[dict[str, Any]]:
    """Return every sweep_runs row of the sweep."""
    return [dict(r) for r in await conn.fetch(
        "SELECT * FROM sweep_runs WHERE sweep = $1 ORDER BY window_start, variant, replicate",
        sweep)]


async def mark_running(conn: asyncpg.Connection, sweep: str, run: RunSpec, run_dir: Path,
                       run_id: uuid.UUID) -> None:
    """Record that a run starts as `run_id` (dropping what an earlier attempt of it left)."""
    old = await conn.fetchval("SELECT run_id FROM sweep_runs WHERE sweep = $1 AND key = $2",
                              sweep, run.key)
    if old is not None:
        await delete_runs(conn, [old])
    await conn.execute(
        "INSERT INTO sweep_runs (key, sweep, variant, window_start, window_end, replicate, status,"
        " run_dir, run_id) VALUES ($1, $2, $3, to_timestamp($4), to_timestamp($5), $6, "
        "'running', $7, $8) "
        "ON CONFLICT (sweep, key) DO UPDATE SET status = 'running', run_id = $8, "
        "exit_code = NULL, started_at = now(), finished_at = NULL, run_dir = $7",
        run.key, sweep, run.variant, run.window.start, run.window.end, run.replicate,
        str(run_dir), run_id)


async def mark_finished(conn: asyncpg.Connection, sweep: str, key: str, code: int) -> None:
    """Record a run's end: done when it exited 0, failed otherwise."""
    await conn.execute(
        "UPDATE sweep_runs SET status = $3, exit_code = $4, finished_at = now() "
        "WHERE sweep = $1 AND key = $2", sweep, key, "done" if code == 0 else "failed", code)


async def delete_runs(conn: asyncpg.Connection, run_ids: list[uuid.UUID]) -> int:
    """Delete every row of these runs from every table; return how many rows went."""
    gone = 0
    async with conn.transaction():
        for table in RUN_TABLES:
            status = await conn.execute(f"DELETE FROM {table} WHERE run_id = ANY($1::uuid[])",
                                        run_ids)
            gone += int(status.rsplit(" ", 1)[-1])
        status = await conn.execute("DELETE FROM runs WHERE run_id = ANY($1::uuid[])", run_ids)
        gone += int(status.rsplit(" ", 1)[-1])
    return gone


async def prune(conn: asyncpg.Connection, *, sweep: str | None = None,
                keep: set[str] | None = None,
                run_ids: list[uuid.UUID] | None = None) -> tuple[int, int]:
    """Remove runs no longer wanted; return (runs removed, rows removed).

    With `sweep` and `keep`: the sweep's runs whose key is not kept, and those not `done`.
    With `run_ids`: those runs (and their sweep_runs rows, if any).
    """
    if sweep is not None:
        rows = await conn.fetch(
            "SELECT sweep, key, run_id, run_dir FROM sweep_runs WHERE sweep = $1 AND "
            "(NOT (key = ANY($2::text[])) OR status <> 'done')", sweep, sorted(keep or ()))
    else:
        rows = await conn.fetch("SELECT sweep, key, run_id, run_dir FROM sweep_runs "
                                "WHERE run_id = ANY($1::uuid[])", run_ids or [])
    ids = [r["run_id"] for r in rows if r["run_id"] is not None]
    if sweep is None:
        ids = sorted(set(ids) | set(run_ids or []))
    removed = await delete_runs(conn, ids)
    await conn.execute("DELETE FROM sweep_runs WHERE (sweep, key) IN "
                       "(SELECT * FROM unnest($1::text[], $2::text[]))",
                       [r["sweep"] for r in rows], [r["key"] for r in rows])
    for r in rows:
        shutil.rmtree(r["run_dir"], ignore_errors=True)
    return max(len(ids), len(rows)), removed
