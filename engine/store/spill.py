"""The spill file: rows that outlive a database outage, replayed into Postgres in order.

`SpillFile` is the writer's overflow: an append-only JSON-lines file (`{"t": table, "r": row}`,
ids kept) replayed into Postgres in order; replaying twice is harmless since rows are inserted
with `ON CONFLICT (id) DO NOTHING`, so a crash mid-replay only means replaying again. Every
OSError of an append propagates to the writer, which keeps the rows in memory (and halts trading
when it cannot hold them: engine.store.writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import asyncpg
import structlog

from engine.store.database import prepare_connection
from engine.store.rows import Row, row_from_json, row_to_json, write_batches

log = structlog.get_logger("store")

REPLAY_CHUNK_ROWS = 10_000


class SpillFile:
    """Append-only JSON-lines file of rows waiting for Postgres; `pending` counts its rows."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.pending = 0
        self.skip: set[object] = set()  # ids of quarantined rows: left out of the replay
        self._offset = 0  # bytes already replayed

    def refresh(self) -> None:
        """Count the rows in the file (at start, or after someone else replayed it).

        No file (or a path through something that is not a directory) holds no row; any other
        OSError (a permission, an I/O error, the path a directory) propagates: rows the file
        may hold are unknown, and nothing may be written past them.
        """
        self._offset = 0
        pending = 0
        try:
            f = self.path.open("rb")
        except (FileNotFoundError, NotADirectoryError):
            self.pending = 0
            return
        with f:
            last = b"\n"
            while chunk := f.read(1 << 20):
                pending += chunk.count(b"\n")
                last = chunk[-1:]
            if last != b"\n":
                pending += 1  # a torn last line from a crash mid-append
        self.pending = pending

    def append(self, items: Iterable[tuple[str, Row]]) -> int:
        """Append rows durably (fsync); return how many."""
        data = b"".join(row_to_json(table, row) + b"\n" for table, row in items)
        if not data:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # end a torn line so it cannot swallow the next one
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                # A failed append leaves no part of itself behind: the rows stay with the writer.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        n = data.count(b"\n") - data.startswith(b"\n")
        self.pending += n
        return n

    def read(self, max_rows: int) -> tuple[int, int, list[tuple[str, Row]]]:
        """Return (end offset, lines read, decoded rows) of the next unreplayed lines."""
        try:
            f = self.path.open("rb")
        except (FileNotFoundError, NotADirectoryError):
            return self._offset, 0, []
        with f:
            f.seek(self._offset)
            lines = list(islice(f, max_rows))
        items = []
        for i, line in enumerate(lines):
            try:
                item = row_from_json(line)
            except ValueError as exc:
                log.error("spill.bad_line", path=str(self.path), line_at=self._offset + i,
                          error=str(exc))
                continue
            if item[1][0] not in self.skip:
                items.append(item)
        return self._offset + sum(map(len, lines)), len(lines), items

    def consumed(self, end: int, lines: int) -> None:
        """Mark lines up to `end` replayed; empty the file once all of it is."""
        self._offset = end
        self.pending = max(0, self.pending - lines)
        try:
            size = self.path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            size = 0
        if self._offset >= size:
            if size:
                os.truncate(self.path, 0)
                log.info("spill.emptied", path=str(self.path))
            self._offset = 0
            self.pending = 0


async def replay_chunk(
    conn: asyncpg.Connection, spill: SpillFile, limit_s: float
) -> tuple[int, int]:
    """Write the next chunk of the spill file in one transaction; return (rows, rows new)."""
    end, lines, items = spill.read(REPLAY_CHUNK_ROWS)
    batches: dict[str, list[Row]] = {}
    for table, row in items:
        batches.setdefault(table, []).append(row)
    new = await write_batches(conn, batches, limit_s=limit_s) if items else 0
    spill.consumed(end, lines)
    return len(items), new


class SpillReplayFailed(Exception):
    """The start-up replay of the spill file could not finish (one clear line: the reason)."""


async def replay_spill_file(dsn: str, path: str | Path, *, limit_s: float = 60.0,
                            connect_timeout_s: float = 5.0,
                            session: dict[str, str] | None = None) -> int:
    """Write every row of the spill file to Postgres, then empty it; return how many were new.

    Each chunk's progress is logged (`spill.replaying`); the whole replay gives up after
    `limit_s` (`SpillReplayFailed`). A row the database refuses is moved to the quarantine
    table when an operator asked for it (`run.py db --quarantine ID`); otherwise it is recorded
    there as refused and the replay fails naming it. `session`: the connection's server settings
    (the writer's bounded waits).
    """
    from engine.store.errors import RowRefused, describe
    from engine.store.quarantine import record_refused, take_if_quarantined

    spill = SpillFile(path)
    try:
        spill.refresh()
    except OSError as exc:
        raise SpillReplayFailed(f"cannot read the spill file {path}: {describe(exc)}") from exc
    if not spill.pending:
        return 0
    total, new, done = spill.pending, 0, 0
    log.info("spill.replay_started", rows=total, path=str(path), limit_s=limit_s)
    try:
        async with asyncio.timeout(limit_s):
            conn = await asyncpg.connect(dsn, timeout=connect_timeout_s,
                                         server_settings=session or {})
            try:
                await prepare_connection(conn)
                while spill.pending:
                    try:
                        rows, fresh = await replay_chunk(conn, spill, limit_s)
                    except RowRefused as refused:
                        if await take_if_quarantined(conn, refused):
                            spill.skip.add(refused.row[0])
                            continue
                        await record_refused(conn, refused)
                        raise SpillReplayFailed(
                            f"the database refuses spilled row {refused.row_id} of "
                            f"{refused.table}: {describe(refused.cause)}; quarantine it with "
                            f"`run.py db --quarantine {refused.row_id}` and start again"
                        ) from refused
                    new += fresh
                    done += rows
                    log.info("spill.replaying", rows=done, of=total, new=new, path=str(path))
            finally:
                conn.terminate()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise SpillReplayFailed(
            f"replaying the spill file {path} gave up after {done} of {total} rows "
            f"({describe(exc)}; bound {limit_s:g}s, database.spill_replay_seconds)") from exc
    log.info("spill.replayed", new=new, rows=done, path=str(path))
    return new
