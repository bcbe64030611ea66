"""The one table of writer errors: an outage, a refused row, or a programming error.

- an outage (connection lost, timeout, server unavailable): the writer keeps the rows, retries
  with back-off and spills past `max_buffer_rows`; trading goes on while rows are held or
  spilled durably and halts when neither is possible;
- a row refused by the database (SQLSTATE class 22 or 23, a trigger's exception, a bad value):
  the writer keeps the row and everything after it, retries and alerts; trading halts until the
  row commits or is quarantined;
- a programming error in the writer: every held row goes to the last-resort file and the
  traceback is logged; the engine stops with exit code 1.

`classify` sorts an exception into one of the three; the writer and the start-up spill replay
both use it, so they cannot disagree.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import asyncpg

# SQLSTATE classes of a server that is unavailable, overloaded or cut us off: retrying helps.
# 08 connection exception, 25 (25P03 idle-in-transaction timeout), 40 rollback (serialization,
# deadlock), 53 insufficient resources (disk full, out of memory, too many connections),
# 55 object not in prerequisite state (55P03 lock_timeout), 57 operator intervention (57014
# statement_timeout, admin shutdown, cannot connect now), 58 system error, XX internal error.
OUTAGE_CLASSES = frozenset({"08", "25", "40", "53", "55", "57", "58", "XX"})
# SQLSTATE classes of a row the database refuses: 22 data exception (a bad value), 23 integrity
# constraint violation, P0 a PL/pgSQL RAISE (a trigger's exception), 54 a value too large.
REFUSED_CLASSES = frozenset({"22", "23", "P0", "54"})


class Kind(Enum):
    OUTAGE = "outage"
    REFUSED = "refused"
    BUG = "bug"


class RowRefused(Exception):
    """Postgres refused this row of this table (the first one found in the batch)."""

    def __init__(self, table: str, row: tuple[Any, ...], cause: BaseException) -> None:
        super().__init__(f"{table} row {row[0]} refused: {describe(cause)}")
        self.table = table
        self.row = row
        self.cause = cause

    @property
    def row_id(self) -> str:
        return str(self.row[0])


def describe(exc: BaseException) -> str:
    """Return `Type: message` (with the SQLSTATE of a Postgres error)."""
    state = getattr(exc, "sqlstate", None)
    code = f" [{state}]" if isinstance(state, str) else ""
    return f"{type(exc).__name__}{code}: {exc}"


def classify(exc: BaseException) -> Kind:
    """Sort a writer error into the one table: an outage, a refused row, or a bug."""
    if isinstance(exc, RowRefused):
        return Kind.REFUSED
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        if state[:2] in OUTAGE_CLASSES:
            return Kind.OUTAGE
        if state[:2] in REFUSED_CLASSES or isinstance(exc, asyncpg.DataError):
            return Kind.REFUSED
        return Kind.BUG  # e.g. class 42: a missing table or column is not the rows' fault
    if isinstance(exc, asyncpg.DataError):  # client-side: a value its codec cannot encode
        return Kind.REFUSED
    if isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError,
                        asyncpg.exceptions.ConnectionDoesNotExistError)):
        return Kind.OUTAGE  # (asyncpg's InterfaceError: the connection closed or is in use)
    return Kind.BUG
