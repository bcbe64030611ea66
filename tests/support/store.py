"""Helpers for the store, writer and recovery tests: events, a cuttable TCP proxy, polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from engine.events import AccountSnapshot, CycleFinished, OrderFilled, RunStarted, new_id
from engine.settings import DatabaseSettings
from engine.store.database import migrate, prepare_connection
from engine.store.rows import RunStamp, write_rows
from engine.store.writer import Writer


def db_settings(tmp_path: Path, **overrides: Any) -> DatabaseSettings:
    """Return database settings for a test: spill file in tmp_path, short back-off."""
    values: dict[str, Any] = {
        "spill_path": str(tmp_path / "spill.jsonl"),
        "embedded_dir": str(tmp_path / "pg"),
        "last_resort_dir": str(tmp_path / "last-resort"),
        "max_backoff_seconds": 1.0,
        "connect_timeout_seconds": 2.0,
        "write_timeout_seconds": 5.0,
        "shutdown_flush_seconds": 5.0,
    }
    values.update(overrides)
    return DatabaseSettings(**values)


def fill(i: int, trader: str = "claude", ts: float = 1_767_225_600.0) -> OrderFilled:
    """Return a distinct fill; `i` goes into qty so the order can be checked."""
    return OrderFilled(trader=trader, symbol="BTCUSDT", side="buy", qty=float(i), price=100_000.0,
                       notional=100_000.0 * i, fee=0.05 * i, realized_pnl=0.0, reason="decision",
                       cycle_id="c1", ref_price=99_990.0, ts=ts + i)


def snapshot(trader: str, equity: float, ts: float, *, cause: str = "cycle",
             positions: tuple[dict[str, Any], ...] = (),
             state: dict[str, Any] | None = None) -> AccountSnapshot:
    """Return an account snapshot of `trader` with `equity`."""
    return AccountSnapshot(trader=trader, cash=equity, margin=0.0, unrealized_pnl=0.0,
                           equity=equity, realized_pnl=equity - 10_000.0, fees=1.25, funding=0.0,
                           peak_equity=max(equity, 10_000.0), drawdown_pct=0.0,
                           return_pct=(equity / 10_000.0 - 1) * 100, positions=positions,
                           state=state or {"day_start_equity": 10_000.0}, cause=cause,
                           cycle_id="c1", ts=ts)


def run_started(fresh: bool, started_at: float = 1_767_225_600.0, *, mode: str = "live",
                source: str | None = None) -> RunStarted:
    return RunStarted(run_id=new_id(), started_at=started_at, version="0.1.0",
                      settings_hash="abc", fresh=fresh, dry_run=False, mode=mode, source=source)


def cycle(cycle_id: str, finished_at: float) -> CycleFinished:
    return CycleFinished(cycle_id=cycle_id, trigger="schedule", started_at=finished_at - 2.5,
                         finished_at=finished_at, status="ok", skip_reason=None,
                         summary={"traders": 2}, snapshot={"ts": finished_at, "symbols": {}})


def file_lines(path: str | Path) -> list[bytes] | None:
    """Return the lines of a file, or None when it does not exist."""
    try:
        return Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        return None


def append_bytes(path: str | Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


async def persist(dsn: str, *events: object) -> int:
    """Write events as the writer would, in one staged transaction; return how many were new."""
    batches: dict[str, list[tuple[object, ...]]] = {}
    conn = await asyncpg.connect(dsn)
    try:
        await prepare_connection(conn)
        # As the writer does, each row names the latest run (written first, so the database
        # has resolved its arena).
        runs = [stamp_row for e in events if isinstance(e, RunStarted)
                for stamp_row in [RunStamp()(e)[1]]]
        new = await write_rows(conn, {"runs": runs}) if runs else 0
        latest = await conn.fetchrow("SELECT run_id, arena_id FROM runs ORDER BY id DESC LIMIT 1")
        stamp = RunStamp(*(latest or (None, None)))
        for e in events:
            if not isinstance(e, RunStarted):
                table, row = stamp(e)
                batches.setdefault(table, []).append(row)
        return new + await write_rows(conn, batches)
    finally:
        await conn.close()


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def count(dsn: str, table: str) -> int:
    return (await fetch(dsn, f"SELECT count(*) AS n FROM {table}"))[0]["n"]


async def eventually(cond: Callable[[], Awaitable[bool]], tries: int = 500) -> None:
    """Poll `cond` (real I/O involved) until true; fail after `tries` polls of 10 ms."""
    for _ in range(tries):
        if await cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


@contextlib.asynccontextmanager
async def running(writer: Writer) -> AsyncIterator[asyncio.Task[None]]:
    """Run the writer for the block, then cancel it as the engine would at shutdown."""
    task = asyncio.create_task(writer.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def migrated(dsn: str) -> str:
    await migrate(dsn)
    return dsn


class PgProxy:
    """A TCP proxy in front of Postgres that a test can make refuse or cut connections."""

    def __init__(self, dsn: str) -> None:
        self._target = dsn
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.accepted = 0

    @property
    def dsn(self) -> str:
        """Return the target DSN pointed at this proxy."""
        parts = urlsplit(self._target)
        user = parts.username or "postgres"
        auth = f"{user}:{parts.password}@" if parts.password else f"{user}@"
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{self.port}", query=""))

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self._target)
        host = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
        port = parts.port or int(parse_qs(parts.query).get("port", ["5432"])[0])
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def start(self) -> None:
        """Listen (again, on the same port): Postgres is reachable."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        """Stop listening and cut every connection: Postgres is down."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.cut()
        if server is not None:
            await server.wait_closed()

    def cut(self) -> None:
        """Cut every open connection (the server stays reachable)."""
        for w in list(self._pipes):
            w.transport.abort()
        self._pipes.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await self._open_target()
        except OSError:
            writer.transport.abort()
            return
        self._pipes.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._pipes.discard(writer)
            writer.transport.abort()

    async def close(self) -> None:
        await self.refuse()


class CommitEater:
    """A TCP proxy in front of Postgres that can swallow one commit and keep the session open.

    What a partition at COMMIT looks like: the client never hears back, and the server keeps the
    session idle in its transaction, holding the locks of every row it wrote. A COPY outside a
    transaction (the writer's one-table flush) commits when its CopyDone arrives: swallowing that
    leaves the COPY open on the server, holding the same locks. Speaks just enough
    of the wire protocol (SSL off) to find a simple-query COMMIT in what the client sends.
    """

    def __init__(self, dsn: str) -> None:
        self._proxy = PgProxy(dsn)  # its target parsing; not its server
        self._server: asyncio.Server | None = None
        self._upstreams: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.armed = False
        self.eaten = 0
        self.port = 0

    @property
    def dsn(self) -> str:
        self._proxy.port = self.port
        return self._proxy.dsn + "?sslmode=disable"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._upstreams:
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await self._proxy._open_target()
        self._upstreams.append(up_writer)
        back = asyncio.create_task(self._back(up_reader, writer))
        self._tasks.add(back)
        try:
            await self._forth(reader, up_writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        # The client is gone: the server side stays open (a partition keeps the session alive).

    async def _forth(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        while True:  # untyped start-up packets: SSLRequest, GSSENCRequest, StartupMessage
            head = await reader.readexactly(8)
            rest = await reader.readexactly(int.from_bytes(head[:4], "big") - 8)
            up.write(head + rest)
            if int.from_bytes(head[4:8], "big") not in (80877103, 80877104):
                break
        in_tx = False
        while True:
            head = await reader.readexactly(5)
            body = await reader.readexactly(int.from_bytes(head[1:5], "big") - 4)
            query = body.upper().lstrip() if head[:1] == b"Q" else b""
            if query.startswith((b"BEGIN", b"START")):
                in_tx = True
            elif query.startswith((b"ROLLBACK", b"END")):
                in_tx = False
            # what commits: a COMMIT, or the CopyDone ending a COPY outside a transaction
            commits = query.startswith(b"COMMIT") or (head[:1] == b"c" and not in_tx)
            if commits:
                in_tx = False
            if self.armed and commits:
                self.armed = False
                self.eaten += 1
                await reader.read()  # swallow everything after it until the client gives up
                return
            up.write(head + body)
            await up.drain()

    async def _back(self, up: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await up.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()
