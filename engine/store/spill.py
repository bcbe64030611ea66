"""The spill file: rows that outlive a database outage, replayed into Postgres in order.

`SpillFile` is the writer's overflow: an append-only JSON-lines file (`{"t": table, "r": row}`,
ids kept) replayed into Postgres in order; replaying twice is harmless since rows are inserted
with `ON CONFLICT (id) DO NOTHING`, so a crash mid-replay only means replaying again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import asyncpg
import orjson
import structlog

from engine.store.database import prepare_connection
from engine.store.rows import Row, row_from_json, row_to_json, write_batches

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
