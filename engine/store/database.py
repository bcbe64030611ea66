"""Postgres: which server (DATABASE_URL or embedded), the schema migrations, connection set-up.

`Database.open` picks the server: `DATABASE_URL` when set, else an embedded PostgreSQL (the
`pgserver` package) whose data lives in `settings.embedded_dir`, started here and stopped by
`close()`. `migrate` applies the versioned SQL files in engine/store/migrations/ once each,
recording them in `schema_migrations`. `prepare_connection` readies a connection for the writer.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from engine.settings import DatabaseSettings, Secrets
from engine.store.rows import TABLES

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

        return pgserver.get_server(path, cleanup_mode="stop")  # type: ignore[attr-defined]


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


# ---------------------------------------------------------------- connections


_PG_EPOCH = 946_684_800.0  # 2000-01-01T00:00:00Z, Postgres' own epoch


def _encode_ts(seconds: float) -> tuple[int]:
    return (round((seconds - _PG_EPOCH) * 1_000_000),)


def _decode_ts(value: tuple[int]) -> float:
    return value[0] / 1_000_000 + _PG_EPOCH


async def prepare_connection(conn: asyncpg.Connection, *, synchronous_commit: bool = True) -> None:
    """Make a connection ready for `write_rows`: epoch-seconds timestamptz, staging tables.

    `synchronous_commit=False`: the session's commits return before their WAL is on disk (a
    backtest's writer). After a crash Postgres replays WAL in commit order, so it keeps a prefix
    of the commits: only the last few can be lost, never one without those before it.
    """
    if not synchronous_commit:
        await conn.execute("SET synchronous_commit = off")
    # Rows carry epoch seconds; encoding them as Postgres microseconds directly is several times
    # cheaper than building a datetime per value.
    await conn.set_type_codec("timestamptz", schema="pg_catalog", encoder=_encode_ts,
                              decoder=_decode_ts, format="tuple")
    for t in TABLES.values():
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {t.stage} (LIKE {t.name} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )


# ---------------------------------------------------------------- bounded waits


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


def keepalive_settings(settings: DatabaseSettings) -> dict[str, str]:
    """Return the server side of TCP keepalives (probes after `keepalive_seconds` idle)."""
    idle = max(1, round(settings.keepalive_seconds))
    return {"tcp_keepalives_idle": str(idle), "tcp_keepalives_interval": str(max(1, idle // 3)),
            "tcp_keepalives_count": "3"}


def writer_session(settings: DatabaseSettings) -> dict[str, str]:
    """Return the server settings of a writer connection: every wait on the server bounded."""
    return {
        **keepalive_settings(settings),
        "application_name": "arena-writer",
        "statement_timeout": _ms(settings.statement_timeout_seconds),
        "lock_timeout": _ms(settings.lock_timeout_seconds),
        "idle_in_transaction_session_timeout": _ms(settings.idle_in_transaction_timeout_seconds),
    }


def query_session(settings: DatabaseSettings) -> dict[str, str]:
    """Return the server settings of a report or `run.py db` connection (a larger bound)."""
    return {**keepalive_settings(settings), "application_name": "arena-query",
            "statement_timeout": _ms(settings.query_statement_timeout_seconds)}


def set_keepalive(conn: asyncpg.Connection, seconds: float) -> None:
    """Turn on the client side of TCP keepalives: a dead peer is noticed in about 2 x `seconds`."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket has no peer to lose
    idle = max(1, round(seconds))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", max(1, idle // 3)),
                        ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", 2 * idle * 1000)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


async def connect(dsn: str, settings: DatabaseSettings,
                  session: dict[str, str]) -> asyncpg.Connection:
    """Open a connection with `session`'s server settings and TCP keepalives."""
    conn = await asyncpg.connect(dsn, timeout=settings.connect_timeout_seconds,
                                 server_settings=session)
    set_keepalive(conn, settings.keepalive_seconds)
    return conn


async def free_backend(conn: asyncpg.Connection, pid: int) -> bool:
    """Terminate the writer's previous backend `pid` if it still lives (a partition can leave
    it idle in a transaction, holding the locks of rows the retry writes again)."""
    return bool(await conn.fetchval(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE pid = $1 AND application_name = 'arena-writer'", pid))
