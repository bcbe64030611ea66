"""Recovery: the state the engine resumes from (after replaying the spill file).

Arenas are kept apart by mode and source: every run records its `mode` (live | replay |
backtest) and `source` (a replay file's sha256, a backtest window's hash, NULL live). A row
belongs to the run whose RunStarted id is the greatest id below its own (ids are UUIDv7, ordered
by the wall time they were made at, so the attribution holds whatever the engine clock read and
rows replayed late from the spill file stay with their run). The arena of a mode and source is
every run of that mode and source since the latest one stored with `fresh = true` (or since the
first one): `arena_runs(mode, source)` in migration 0002. Recovery reads only that arena's rows;
within it, a trader's latest snapshot is the one with the greatest id. Each account is then
checked against the arena's committed fills and funding (`engine.store.reconcile`): recovery
never invents, so an account they contradict stops the start (`RecoveryRefused`) unless the
operator chose `--accept-reconcile` (or `--fresh`).

Snapshots carry the running return statistics but not the kept per-cycle return series: it is
rebuilt from the arena's newest cycle snapshots of the trader (equity and time, in id order) by
`ReturnStats.series_from_equity`, exactly as the account made it, and handed over as
`returns_series`. A snapshot stored by an older version that still carries its series keeps it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import structlog

from engine.paper.stats import RETURNS_KEPT, ReturnStats
from engine.store.reconcile import reconcile
from engine.store.spill import replay_spill_file

log = structlog.get_logger("store")

_SNAPSHOT_FIELDS = (
    "trader", "cash", "margin", "unrealized_pnl", "equity", "realized_pnl", "fees", "funding",
    "peak_equity", "drawdown_pct", "return_pct", "positions", "state", "cause", "cycle_id", "ts",
    "id",
)
# Rows of table `t` that belong to the arena's runs `a`.
IN_ARENA = "t.id > a.id AND (a.next_id IS NULL OR t.id < a.next_id)"


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """The persisted state of the current arena of one mode and source."""

    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # trader → the latest AccountSnapshot as a dict of its fields (positions a tuple of dicts,
    # state a dict, ts epoch seconds, id a UUID) plus `returns_series`, the kept (ts, return)
    # pairs rebuilt from the cycle snapshots (None when the state carries its own);
    # PaperBroker.restore(trader, snapshot) takes it
    runs: int = 0  # runs recorded before this start, all arenas
    arena_runs: int = 0  # runs recorded in the current arena
    arena_run_id: uuid.UUID | None = None  # RunStarted.run_id of the run that began the arena
    last_cycle_id: str | None = None
    last_cycle_at: float | None = None  # finished_at of the last persisted cycle
    replayed_rows: int = 0  # spill-file rows written to Postgres before reading
    mode: str = "live"
    source: str | None = None
    # trader → {field: {"snapshot": value, "rows": value}} for every account whose latest
    # snapshot disagreed with its committed fills/funding and was rebuilt from them
    # (--accept-reconcile)
    reconciled: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Tell whether there is nothing to resume (no account was ever persisted)."""
        return not self.accounts


async def load_state(dsn: str, *, spill_path: str | None = None, mode: str = "live",
                     source: str | None = None, returns_kept: int | None = None,
                     accept_reconcile: bool = False, spill_limit_s: float = 120.0,
                     connect_timeout_s: float = 5.0,
                     session: dict[str, str] | None = None) -> RecoveredState:
    """Replay the spill file if given, then read the latest state of the arena (mode, source).

    `returns_kept` (leaderboard.returns_kept) is how many per-cycle returns to rebuild per
    trader; by default the window its latest snapshot was made with. An account its rows
    contradict raises `RecoveryRefused`, unless `accept_reconcile` (then it is rebuilt from the
    rows, every difference logged). The spill replay gives up after `spill_limit_s`
    (`SpillReplayFailed`).
    """
    replayed = 0
    if spill_path is not None:
        replayed = await replay_spill_file(dsn, spill_path, limit_s=spill_limit_s,
                                           connect_timeout_s=connect_timeout_s, session=session)
    conn = await asyncpg.connect(dsn, timeout=connect_timeout_s)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await _read(conn, replayed, mode, source, returns_kept, accept_reconcile)
    finally:
        await conn.close()


async def _read(conn: asyncpg.Connection, replayed: int, mode: str, source: str | None,
                returns_kept: int | None, accept_reconcile: bool) -> RecoveredState:
    runs = await conn.fetchval("SELECT count(*) FROM runs")
    arena = await conn.fetch("SELECT run_id FROM arena_runs($1, $2) ORDER BY id", mode, source)
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (t.trader) {', '.join('t.' + f for f in _SNAPSHOT_FIELDS)} "
        f"FROM account_snapshots t JOIN arena_runs($1, $2) a ON {IN_ARENA} "
        "ORDER BY t.trader, t.id DESC",
        mode, source,
    )
    cycle = await conn.fetchrow(
        f"SELECT t.cycle_id, t.finished_at FROM cycles t JOIN arena_runs($1, $2) a "
        f"ON {IN_ARENA} ORDER BY t.id DESC LIMIT 1",
        mode, source,
    )
    accounts = {r["trader"]: _snapshot_dict(r) for r in rows}
    reconciled = await reconcile(conn, accounts, IN_ARENA, mode, source,
                                 accept=accept_reconcile) if accounts else {}
    for trader, snap in accounts.items():
        returns = snap["state"].get("returns") or {}
        snap["returns_series"] = None if "recent" in returns else await _returns_series(
            conn, trader, mode, source, returns_kept or int(returns.get("window", RETURNS_KEPT)))
    state = RecoveredState(
        accounts=accounts,
        runs=runs,
        arena_runs=len(arena),
        arena_run_id=arena[0]["run_id"] if arena else None,
        last_cycle_id=cycle["cycle_id"] if cycle else None,
        last_cycle_at=cycle["finished_at"].timestamp() if cycle else None,
        replayed_rows=replayed,
        mode=mode,
        source=source,
        reconciled=reconciled,
    )
    log.info("store.state_loaded", mode=mode, source=source, traders=len(state.accounts),
             runs=runs, arena_runs=state.arena_runs, last_cycle_id=state.last_cycle_id,
             replayed_rows=replayed, reconciled=sorted(reconciled))
    return state


def _snapshot_dict(record: asyncpg.Record) -> dict[str, Any]:
    snap = dict(record)
    snap["positions"] = tuple(orjson.loads(snap["positions"]))
    snap["state"] = orjson.loads(snap["state"])
    snap["ts"] = snap["ts"].timestamp()
    return snap


async def _returns_series(conn: asyncpg.Connection, trader: str, mode: str, source: str | None,
                          kept: int) -> list[tuple[float, float]]:
    """Rebuild `trader`'s newest `kept` per-cycle returns from the arena's cycle snapshots."""
    limit = kept + 2  # one more return than kept: the first one of a partial history may be off
    while True:
        rows = await conn.fetch(
            f"SELECT t.ts, t.equity FROM account_snapshots t JOIN arena_runs($1, $2) a "
            f"ON {IN_ARENA} WHERE t.trader = $3 AND t.cause = 'cycle' "
            "ORDER BY t.id DESC LIMIT $4",
            mode, source, trader, limit,
        )
        points = [(r["ts"].timestamp(), r["equity"]) for r in reversed(rows)]
        if len(rows) < limit:  # the arena's whole history of the trader
            return ReturnStats.series_from_equity(points, kept)
        series = ReturnStats.series_from_equity(points, kept + 1)
        if len(series) > kept:
            return series[1:]
        limit *= 2  # second snapshots at one instant made fewer returns than rows: read further
