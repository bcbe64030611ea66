"""Postgres: which server, the schema migrations, and how events become rows.

`Database.open` picks the server: `DATABASE_URL` when set, else an embedded PostgreSQL (the
`pgserver` package) whose data lives in `settings.embedded_dir`, started here and stopped by
`close()`. `migrate` applies the versioned SQL files in engine/migrations/ once each, recording them
in `schema_migrations`. `TABLES` maps each persisted event type to its table and row; `write_rows`
writes batches of rows in one transaction with COPY, skipping ids already present.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import structlog

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
from engine.settings import DatabaseSettings, Secrets

if TYPE_CHECKING:
    from engine.recovery import RecoveredState

log = structlog.get_logger("store")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x6172656E61  # pg_advisory_lock key ("arena"): one migrator at a time

# ---------------------------------------------------------------- database selection


class Database:
    """The Postgres the engine writes to: `DATABASE_URL`, or the embedded server."""

    def __init__(self, dsn: str, server: Any | None = None) -> None:
        self.dsn = dsn
        self.embedded = server is not None
        self._server = server

    @classmethod
    async def open(cls, settings: DatabaseSettings, secrets: Secrets) -> Database:
        """Connect to DATABASE_URL, or start the embedded server; check it answers."""
        if secrets.database_url:
            db = cls(secrets.database_url)
        else:
            server = await asyncio.to_thread(_start_embedded, settings.embedded_dir)
            db = cls(server.get_uri(), server)
        conn = await asyncpg.connect(db.dsn, timeout=settings.connect_timeout_seconds)
        try:
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        log.info("store.opened", embedded=db.embedded, server_version=version,
                 data_dir=settings.embedded_dir if db.embedded else None)
        return db

    async def close(self) -> None:
        """Stop the embedded server (a DATABASE_URL server is left alone)."""
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.cleanup)
            log.info("store.embedded_stopped")


def _start_embedded(data_dir: str) -> Any:
    path = Path(data_dir).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns on stderr when XDG_RUNTIME_DIR is unset (servers, CI): harmless.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver  # imported lazily: only the embedded default needs it

        return pgserver.get_server(path, cleanup_mode="stop")


# ---------------------------------------------------------------- migrations


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Return the migration files (NNNN_name.sql) in version order."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", path.name)
        if m is None:
            raise ValueError(f"migration file {path.name!r} must be named NNNN_name.sql")
        found.append(Migration(int(m[1]), path.stem, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}")
    return found


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; return their names."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"]: r["checksum"]
                for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}
        for mig in migrations(directory):
            if mig.version in done:
                if done[mig.version] != mig.checksum:
                    log.warning("store.migration_changed", migration=mig.name,
                                detail="applied file was edited since; add a new migration")
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version, mig.name, mig.checksum,
                )
            applied.append(mig.name)
            log.info("store.migrated", migration=mig.name)
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        finally:
            await conn.close()
    return applied


# ---------------------------------------------------------------- events → rows

Row = tuple[Any, ...]


def dumps(value: Any) -> str | None:
    """Return `value` as JSON text for a jsonb column (None stays SQL NULL)."""
    if value is None:
        return None
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


def _table(name: str, spec: str) -> Table:
    cols, kinds = [], []
    for item in spec.split():
        col, _, kind = item.partition(":")
        cols.append(col)
        kinds.append(kind or "plain")
    return Table(name, tuple(cols), tuple(kinds))


TABLES: dict[str, Table] = {t.name: t for t in (
    _table("runs", "id:uuid run_id:uuid started_at:ts version settings_hash fresh dry_run"),
    _table("cycles", "id:uuid cycle_id trigger started_at:ts finished_at:ts duration_ms status "
                     "skip_reason summary:json snapshot:json"),
    _table("decisions", "id:uuid cycle_id trader provider model prompt_hash raw_answer "
                        "decision:json valid error input_tokens output_tokens cache_read_tokens "
                        "cache_write_tokens cost_usd latency_ms request_id ts:ts"),
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
    return (e.id, e.run_id, e.started_at, e.version, e.settings_hash, e.fresh, e.dry_run)


def _cycle(e: CycleFinished) -> Row:
    return (e.id, e.cycle_id, e.trigger, e.started_at, e.finished_at,
            _ms(e.started_at, e.finished_at), e.status, e.skip_reason, dumps(e.summary),
            dumps(e.snapshot))


def _decision(e: DecisionMade) -> Row:
    return (e.id, e.cycle_id, e.trader, e.provider, e.model, e.prompt_hash, e.raw_answer,
            dumps(e.decision), e.valid, e.error, e.input_tokens, e.output_tokens,
            e.cache_read_tokens, e.cache_write_tokens, e.cost_usd, e.latency_ms, e.request_id,
            e.ts)


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


def to_row(event: object) -> tuple[str, Row]:
    """Return the table and row of a persisted event."""
    table, make = ROW_OF[type(event)]
    return table, make(event)


def row_to_json(table: str, row: Row) -> bytes:
    """Return one spill-file line (without newline) for a row of `table`."""
    return orjson.dumps({"t": table, "r": row}, default=str, option=orjson.OPT_NON_STR_KEYS)


def row_from_json(line: bytes | str) -> tuple[str, Row]:
    """Decode a spill-file line back into its table and row; raise ValueError when bad."""
    try:
        obj = orjson.loads(line)
        table = TABLES[obj["t"]]
        values = obj["r"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"bad spill line: {exc}") from None
    if not isinstance(values, list) or len(values) != len(table.columns):
        raise ValueError(f"bad spill line: {table.name} row has the wrong number of columns")
    row = []
    for kind, v in zip(table.kinds, values, strict=True):
        if v is not None and kind == "uuid":
            v = uuid.UUID(v)
        row.append(v)
    return table.name, tuple(row)


# ---------------------------------------------------------------- writing batches


_PG_EPOCH = 946_684_800.0  # 2000-01-01T00:00:00Z, Postgres' own epoch


def _encode_ts(seconds: float) -> tuple[int]:
    return (round((seconds - _PG_EPOCH) * 1_000_000),)


def _decode_ts(value: tuple[int]) -> float:
    return value[0] / 1_000_000 + _PG_EPOCH


async def prepare_connection(conn: asyncpg.Connection) -> None:
    """Make a connection ready for `write_rows`: epoch-seconds timestamptz, staging tables."""
    # Rows carry epoch seconds; encoding them as Postgres microseconds directly is several times
    # cheaper than building a datetime per value.
    await conn.set_type_codec("timestamptz", schema="pg_catalog", encoder=_encode_ts,
                              decoder=_decode_ts, format="tuple")
    for t in TABLES.values():
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {t.stage} (LIKE {t.name} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )


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
    return inserted


# Errors about the rows themselves (retrying the same rows cannot help); anything else is taken
# as the database being unavailable and is retried with back-off.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
    TypeError,
    ValueError,
    OverflowError,
)


def is_row_error(exc: BaseException) -> bool:
    """Tell whether `exc` is caused by the rows written rather than by the database's state."""
    return isinstance(exc, ROW_ERRORS)


async def write_batches(
    conn: asyncpg.Connection,
    batches: Mapping[str, Sequence[Row]],
    *,
    limit_s: float,
    reject: Callable[[str, Row, BaseException], None],
    fresh: bool = False,
) -> int:
    """Write the batches in one transaction; if a row is bad, write row by row, rejecting it.

    `fresh` batches (never attempted before) first go by plain COPY; only when some id turns out
    to be present already is the batch written again the staged, duplicate-skipping way.
    """
    try:
        async with asyncio.timeout(limit_s):
            if fresh:
                try:
                    return await write_rows(conn, batches, staged=False)
                except asyncpg.UniqueViolationError:
                    pass
            return await write_rows(conn, batches)
    except Exception as exc:
        if not is_row_error(exc):
            raise
    new = 0
    for table, rows in batches.items():
        for row in rows:
            try:
                async with asyncio.timeout(limit_s):
                    new += await write_rows(conn, {table: [row]})
            except Exception as exc:
                if not is_row_error(exc):
                    raise
                reject(table, row, exc)
    return new


async def load_state(dsn: str, *, spill_path: str | None = None) -> RecoveredState:
    """Replay the spill file if given, then read the current arena's state (see recovery)."""
    from engine.recovery import load_state as _load  # recovery builds on this module

    return await _load(dsn, spill_path=spill_path)
