"""A run's rows, read from Postgres.

Events carry no run id: the rows of a run are those whose UUIDv7 `id` is at least the run's
`runs.id` and below the next run's `runs.id` (ids are ordered by the wall time they were made at).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson


class RunNotFound(LookupError):
    """No run matches what was asked for."""


@dataclass(slots=True)
class RunRows:
    """One run: its `runs` row and every row made while it ran."""

    run: dict[str, Any]
    next_run_id: uuid.UUID | None
    cycles: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)
    positions: list[dict[str, Any]] = field(default_factory=list)
    funding: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    cache_hits: list[dict[str, Any]] = field(default_factory=list)  # llm_cache_hits (0003)


# The columns read per table (the big jsonb/text columns the report does not need are left out).
_COLUMNS = {
    "cycles": "id, cycle_id, status, started_at, finished_at, summary",
    "decisions": ("id, cycle_id, trader, provider, model, decision, valid, error, input_tokens, "
                  "output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, latency_ms, ts"),
    "fills": "id, trader, symbol, side, qty, price, notional, fee, realized_pnl, reason, ts",
    "positions": ("id, event, trader, symbol, side, qty, entry_price, exit_price, realized_pnl, "
                  "fees, reason, opened_at, ts"),
    "funding": "id, trader, symbol, amount, ts",
    "account_snapshots": ("id, trader, equity, drawdown_pct, return_pct, cause, "
                          "state->'capital' AS capital, state->'latency_cost' AS latency_cost, ts"),
    "rejections": "id, trader, rule, ts",
    "llm_cache_hits": "id, trader, saved_usd, ts",
}
_JSON = {"summary", "decision", "capital", "latency_cost", "labels"}


def _plain(record: asyncpg.Record) -> dict[str, Any]:
    out = {}
    for key, value in record.items():
        if hasattr(value, "timestamp"):
            value = value.timestamp()
        elif key in _JSON and isinstance(value, str):
            value = orjson.loads(value)
        out[key] = value
    return out


async def find_run(conn: asyncpg.Connection, run: str = "latest") -> dict[str, Any]:
    """Return the `runs` row asked for: `latest`, or a run_id/id (or a unique prefix of one)."""
    if run == "latest":
        row = await conn.fetchrow("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        if row is None:
            raise RunNotFound("no run in the database yet")
        return _plain(row)
    rows = await conn.fetch(
        "SELECT * FROM runs WHERE run_id::text LIKE $1 || '%' OR id::text LIKE $1 || '%' "
        "ORDER BY id LIMIT 2", run.lower())
    if not rows:
        raise RunNotFound(f"no run with id {run!r} (see: SELECT run_id, started_at FROM runs)")
    if len(rows) > 1:
        raise RunNotFound(f"{run!r} matches more than one run; give more of the id")
    return _plain(rows[0])


async def load_run(conn: asyncpg.Connection, run: str = "latest") -> RunRows:
    """Read one run's rows in one read-only snapshot of the database."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        row = await find_run(conn, run)
        next_id = await conn.fetchval(
            "SELECT id FROM runs WHERE id > $1 ORDER BY id LIMIT 1", row["id"])
        out = RunRows(run=row, next_run_id=next_id)
        for table, attr in (("cycles", "cycles"), ("decisions", "decisions"), ("fills", "fills"),
                            ("positions", "positions"), ("funding", "funding"),
                            ("account_snapshots", "snapshots"), ("rejections", "rejections"),
                            ("llm_cache_hits", "cache_hits")):
            if await conn.fetchval("SELECT to_regclass($1)", table) is None:
                continue  # a database from before that table's migration
            records = await conn.fetch(
                f"SELECT {_COLUMNS[table]} FROM {table} "
                "WHERE id >= $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id",
                row["id"], next_id)
            setattr(out, attr, [_plain(r) for r in records])
    return out
