"""How events become rows, and how batches of rows are written (COPY, one transaction).

`TABLES` maps each persisted event type to its table and row; `write_rows` writes batches of rows
of several tables in one transaction with COPY, skipping ids already present when staged.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from engine.events import (
    AccountSnapshot,
    CycleFinished,
    DecisionMade,
    DecisionRejected,
    FundingPaid,
    JobRun,
    OrderFilled,
    PositionClosed,
    PositionOpened,
    RunStarted,
)
from engine.store.errors import Kind, RowRefused, classify

# ---------------------------------------------------------------- events → rows

Row = tuple[Any, ...]


def dumps(value: Any) -> str | None:
    """Return `value` as JSON text for a jsonb column (None stays SQL NULL)."""
    if value is None:
        return None
    try:  # the usual case, every key a str: the same text, without the option's cost
        return orjson.dumps(value, default=str).decode()
    except orjson.JSONEncodeError:  # e.g. a key that is not a str: written as one
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _ms(start: float, end: float) -> float:
    return (end - start) * 1000.0


@dataclass(frozen=True, slots=True)
class Table:
    """One table: its columns with their kinds (for spill decoding) and the staging table."""

    name: str
    columns: tuple[str, ...]
    kinds: tuple[str, ...]  # uuid | ts (epoch seconds in rows) | json | plain

    @property
    def stage(self) -> str:
        return f"_stage_{self.name}"


# Every row ends with the run and arena it belongs to (migration 0007): the runs row with its
# arena, the others with both. `to_row` appends them; `RunStamp` knows them from the stream.
_RUN_COLUMNS = "run_id:uuid arena_id:uuid"


def _table(name: str, spec: str) -> Table:
    cols, kinds = [], []
    spec += " arena_id:uuid" if name == "runs" else " " + _RUN_COLUMNS
    for item in spec.split():
        col, _, kind = item.partition(":")
        cols.append(col)
        kinds.append(kind or "plain")
    return Table(name, tuple(cols), tuple(kinds))


TABLES: dict[str, Table] = {t.name: t for t in (
    _table("runs", "id:uuid run_id:uuid started_at:ts version settings_hash fresh dry_run mode "
                   "source labels:json"),
    _table("cycles", "id:uuid cycle_id trigger started_at:ts finished_at:ts duration_ms status "
                     "skip_reason summary:json snapshot:json"),
    _table("decisions", "id:uuid cycle_id trader provider model prompt_hash raw_answer "
                        "decision:json valid error input_tokens output_tokens cache_read_tokens "
                        "cache_write_tokens cost_usd latency_ms request_id ts:ts model_version"),
    _table("rejections", "id:uuid cycle_id trader symbol action rule detail ts:ts"),
    _table("fills", "id:uuid trader symbol side qty price notional fee realized_pnl reason "
                    "cycle_id ref_price ts:ts"),
    _table("positions", "id:uuid event trader symbol side qty entry_price exit_price leverage "
                        "margin stop_loss take_profit liquidation_price realized_pnl fees reason "
                        "opened_at:ts cycle_id ts:ts"),
    _table("funding", "id:uuid trader symbol rate mark notional amount ts:ts"),
    _table("account_snapshots", "id:uuid trader cash margin unrealized_pnl equity realized_pnl "
                                "fees funding peak_equity drawdown_pct return_pct positions:json "
                                "state:json cause cycle_id ts:ts"),
    _table("job_runs", "id:uuid job trigger started_at:ts finished_at:ts duration_ms status "
                       "error summary:json"),
)}


def _run(e: RunStarted) -> Row:
    return (e.id, e.run_id, e.started_at, e.version, e.settings_hash, e.fresh, e.dry_run, e.mode,
            e.source, dumps(e.labels))


def _cycle(e: CycleFinished) -> Row:
    return (e.id, e.cycle_id, e.trigger, e.started_at, e.finished_at,
            _ms(e.started_at, e.finished_at), e.status, e.skip_reason, dumps(e.summary),
            dumps(e.snapshot))


def _decision(e: DecisionMade) -> Row:
    return (e.id, e.cycle_id, e.trader, e.provider, e.model, e.prompt_hash, e.raw_answer,
            dumps(e.decision), e.valid, e.error, e.input_tokens, e.output_tokens,
            e.cache_read_tokens, e.cache_write_tokens, e.cost_usd, e.latency_ms, e.request_id,
            e.ts, e.model_version)


def _rejection(e: DecisionRejected) -> Row:
    return (e.id, e.cycle_id, e.trader, e.symbol, e.action, e.rule, e.detail, e.ts)


def _fill(e: OrderFilled) -> Row:
    return (e.id, e.trader, e.symbol, e.side, e.qty, e.price, e.notional, e.fee, e.realized_pnl,
            e.reason, e.cycle_id, e.ref_price, e.ts)


def _opened(e: PositionOpened) -> Row:
    return (e.id, "open", e.trader, e.symbol, e.side, e.qty, e.entry_price, None, e.leverage,
            e.margin, e.stop_loss, e.take_profit, e.liquidation_price, None, None, e.reason, None,
            e.cycle_id, e.ts)


def _closed(e: PositionClosed) -> Row:
    return (e.id, "close", e.trader, e.symbol, e.side, e.qty, e.entry_price, e.exit_price, None,
            None, None, None, None, e.realized_pnl, e.fees, e.reason, e.opened_at, e.cycle_id,
            e.ts)


def _funding(e: FundingPaid) -> Row:
    return (e.id, e.trader, e.symbol, e.rate, e.mark, e.notional, e.amount, e.ts)


def _snapshot(e: AccountSnapshot) -> Row:
    return (e.id, e.trader, e.cash, e.margin, e.unrealized_pnl, e.equity, e.realized_pnl, e.fees,
            e.funding, e.peak_equity, e.drawdown_pct, e.return_pct, dumps(list(e.positions)),
            dumps(e.state), e.cause, e.cycle_id, e.ts)


def _job(e: JobRun) -> Row:
    return (e.id, e.job, e.trigger, e.started_at, e.finished_at,
            _ms(e.started_at, e.finished_at), e.status, e.error, dumps(e.summary))


ROW_OF: dict[type, tuple[str, Callable[[Any], Row]]] = {
    RunStarted: ("runs", _run),
    CycleFinished: ("cycles", _cycle),
    DecisionMade: ("decisions", _decision),
    DecisionRejected: ("rejections", _rejection),
    OrderFilled: ("fills", _fill),
    PositionOpened: ("positions", _opened),
    PositionClosed: ("positions", _closed),
    FundingPaid: ("funding", _funding),
    AccountSnapshot: ("account_snapshots", _snapshot),
    JobRun: ("job_runs", _job),
}
"""Persisted event type → (table, function making its row)."""


def to_row(event: object, run_id: uuid.UUID | None = None,
           arena_id: uuid.UUID | None = None) -> tuple[str, Row]:
    """Return the table and row of a persisted event, stamped with its run and arena."""
    table, make = ROW_OF[type(event)]
    if table == "runs":  # None: the database resolves it (migration 0007's trigger)
        return table, (*make(event), event.arena_id)  # type: ignore[attr-defined]
    return table, (*make(event), run_id, arena_id)


class RunStamp:
    """Convert events to rows stamped with the run of the latest RunStarted converted before.

    The writer's stream begins with its run's RunStarted, so each row gets the run that made it,
    whatever other runs write to the same database at the same time.
    """

    __slots__ = ("arena_id", "run_id")

    def __init__(self, run_id: uuid.UUID | None = None,
                 arena_id: uuid.UUID | None = None) -> None:
        self.run_id = run_id
        self.arena_id = arena_id

    def __call__(self, event: object) -> tuple[str, Row]:
        """Return the table and stamped row of `event`."""
        if type(event) is RunStarted:
            self.run_id = event.run_id
            self.arena_id = event.arena_id or event.run_id
        return to_row(event, self.run_id, self.arena_id)


def run_of(table: str, row: Row) -> tuple[Any, Any]:
    """Return the (run_id, arena_id) a stamped row of `table` names (None when unstamped)."""
    if table == "runs":
        return row[1], row[-1]
    return row[-2], row[-1]


def row_to_json(table: str, row: Row) -> bytes:
    """Return one spill-file line (without newline) for a row of `table`."""
    return orjson.dumps({"t": table, "r": row}, default=str, option=orjson.OPT_NON_STR_KEYS)


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def _padded(table: Table, values: list[Any]) -> list[Any]:
    """Return the values of a spill line written by an older engine, in today's columns.

    Lines before 0007 lack the run and arena: NULL (a runs row's arena is then resolved by the
    database's trigger, 0007; other rows keep NULL); before 0006 a run lacks its labels and
    before 0005 a decision its model version. A line of a sweep branch before 0005/0006 has the
    run and arena but not the labels or model version: a runs line's tenth value is then a UUID.
    """
    n, full = len(values), len(table.columns)
    if table.name == "runs":
        if n == 9:  # before 0006 and 0007
            return [*values, None, None]
        if n == 10:  # before 0007 (labels last) or a sweep line before 0006 (arena_id last)
            tail = values[9]
            return [*values[:9], None, tail] if _is_uuid(tail) else [*values, None]
        return values
    if table.name == "decisions":
        if n == full - 3:  # before 0005 and 0007
            return [*values, None, None, None]
        if n == full - 1:  # a sweep line before 0005: run and arena, no model version
            return [*values[:-2], None, *values[-2:]]
    if n == full - 2:  # before 0007
        return [*values, None, None]
    return values


def row_from_json(line: bytes | str) -> tuple[str, Row]:
    """Decode a spill-file line back into its table and row; raise ValueError when bad."""
    try:
        obj = orjson.loads(line)
        table = TABLES[obj["t"]]
        values = obj["r"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"bad spill line: {exc}") from None
    if table.name == "runs" and isinstance(values, list) and len(values) == 7:
        values = [*values, "live", None]  # spilled before runs had mode and source (0002)
    if isinstance(values, list):
        values = _padded(table, values)
    if not isinstance(values, list) or len(values) != len(table.columns):
        raise ValueError(f"bad spill line: {table.name} row has the wrong number of columns")
    row = []
    for kind, v in zip(table.kinds, values, strict=True):
        if v is not None and kind == "uuid":
            v = uuid.UUID(v)
        row.append(v)
    return table.name, tuple(row)


# ---------------------------------------------------------------- writing batches


async def write_rows(
    conn: asyncpg.Connection, batches: Mapping[str, Sequence[Row]], *, staged: bool = True
) -> int:
    """Write rows of several tables in one transaction; return how many were new.

    Staged (the default): COPY into each table's staging table, then INSERT ... SELECT ... ON
    CONFLICT (id) DO NOTHING, so rows already present are skipped. Not staged: COPY straight
    into the tables, about twice as fast, but the whole transaction fails with
    UniqueViolationError if any row is already present.
    """
    inserted = 0
    nested = conn.is_in_transaction()
    filled = [(name, rows) for name, rows in batches.items() if rows]
    if not staged and not nested and len(filled) == 1:
        # One table: a COPY is a transaction of its own (all rows or none), which saves the
        # BEGIN and COMMIT round trips of most of a replay's flushes (a few snapshot rows).
        name, rows = filled[0]
        t = TABLES[name]
        await conn.copy_records_to_table(t.name, records=rows, columns=t.columns)
        return len(rows)
    async with conn.transaction():
        for name, rows in batches.items():
            if not rows:
                continue
            t = TABLES[name]
            if not staged:
                await conn.copy_records_to_table(t.name, records=rows, columns=t.columns)
                inserted += len(rows)
                continue
            cols = ", ".join(t.columns)
            await conn.copy_records_to_table(t.stage, records=rows, columns=t.columns)
            status = await conn.execute(
                f"INSERT INTO {t.name} ({cols}) SELECT {cols} FROM {t.stage} "
                "ON CONFLICT (id) DO NOTHING"
            )
            inserted += int(status.rsplit(" ", 1)[-1])
            if nested:  # the enclosing transaction goes on: empty the stage for the next write
                await conn.execute(f"DELETE FROM {t.stage}")
    return inserted


# Python errors a value raises while being encoded (the timestamptz codec on a string, say): a bad
# value when one row alone raises it, a programming error when no row does.
_VALUE_ERRORS = (TypeError, ValueError, OverflowError)


async def write_batches(
    conn: asyncpg.Connection,
    batches: Mapping[str, Sequence[Row]],
    *,
    limit_s: float,
    fresh: bool = False,
) -> int:
    """Write the batches in one transaction; return how many rows were new.

    `fresh` batches (never attempted before) first go by plain COPY; only when some id turns out
    to be present already is the batch written again the staged, duplicate-skipping way. When
    the database refuses a row (engine.store.errors), nothing commits: the rows are tried one by
    one (savepoints in a transaction rolled back) and `RowRefused` names the first one refused.
    """
    try:
        async with asyncio.timeout(limit_s):
            if fresh:
                try:
                    return await write_rows(conn, batches, staged=False)
                except asyncpg.UniqueViolationError:
                    pass
            return await write_rows(conn, batches)
    except (asyncpg.PostgresError, *_VALUE_ERRORS) as exc:
        if isinstance(exc, asyncpg.PostgresError) and classify(exc) is not Kind.REFUSED:
            raise
        culprit = await _first_refused(conn, batches, limit_s)
        if culprit is None:
            raise
        raise culprit from exc


class _Probed(Exception):
    """Ends the probing transaction (rolled back) once every row was tried."""


async def _first_refused(conn: asyncpg.Connection, batches: Mapping[str, Sequence[Row]],
                         limit_s: float) -> RowRefused | None:
    """Return the first row the database refuses, trying each in a savepoint; commit nothing."""
    found: RowRefused | None = None
    try:
        async with asyncio.timeout(limit_s), conn.transaction():
            for table, rows in batches.items():
                for row in rows:
                    try:
                        await write_rows(conn, {table: [row]})  # a savepoint
                    except (asyncpg.PostgresError, *_VALUE_ERRORS) as exc:
                        if isinstance(exc, asyncpg.PostgresError) \
                                and classify(exc) is not Kind.REFUSED:
                            raise
                        found = RowRefused(table, row, exc)
                        raise _Probed from None
            raise _Probed
    except _Probed:
        pass
    return found
