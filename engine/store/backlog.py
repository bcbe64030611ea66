"""The writer's queue: rows in publication order across every table, taken oldest first.

Rows wait in one deque per table, and the order they were published in is kept as a deque of
their table names. `take(n)` removes the oldest n rows of the stream, whatever their tables, as
one batch per table: what a flush commits is always a prefix of the event stream. Unless it is
the final flush, the cut never falls between a broker change's rows (a fill, its position row, a
funding payment) and the account snapshot published after them: it moves forward to that
snapshot, or else back to the last snapshot taken.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

from engine.store.rows import TABLES, Row, to_row

CHANGE_TABLES = frozenset({"fills", "positions", "funding"})
MAX_EXTEND = 4096  # how far past a full flush to look for a change's snapshot

Batches = dict[str, list[Row]]


class RowQueue:
    """Rows waiting for Postgres, in publication order, with their arrival times."""

    def __init__(self) -> None:
        self._rows: dict[str, deque[Row]] = {t: deque() for t in TABLES}
        self._order: deque[str] = deque()  # the table of each queued row, oldest first
        self._arrivals: deque[list[Any]] = deque()  # [rows, engine time] per add, oldest first
        self._retried = 0  # rows at the front already tried once (they may have committed)

    @property
    def count(self) -> int:
        """Return how many rows are queued."""
        return len(self._order)

    def add(self, events: Iterable[object], now: float,
            bad: Callable[[object, Exception], None]) -> int:
        """Queue the rows of `events` (arrived at `now`); `bad` gets each unconvertible event."""
        before = len(self._order)
        rows, order = self._rows, self._order.append
        for event in events:
            try:
                table, row = to_row(event)
            except Exception as exc:  # a malformed event must not stop the others
                bad(event, exc)
                continue
            rows[table].append(row)
            order(table)
        added = len(self._order) - before
        if added:
            self._arrivals.append([added, now])
        return added

    def oldest(self) -> float | None:
        """Return the arrival time of the oldest queued row."""
        return self._arrivals[0][1] if self._arrivals else None

    def take(self, n: int, *, whole_changes: bool = True) -> tuple[list[str], Batches, bool]:
        """Remove the oldest n rows (about n: see the module docstring).

        Return their tables in order, the rows per table, and whether none was tried before.
        """
        order = self._order
        n = min(n, len(order))
        if not n:
            return [], {}, True
        names = [order.popleft() for _ in range(n)]
        if whole_changes and names[-1] in CHANGE_TABLES:
            self._whole_changes(names)
        n = len(names)
        left = n
        while left:
            first = self._arrivals[0]
            if first[0] <= left:
                left -= first[0]
                self._arrivals.popleft()
            else:
                first[0] -= left
                left = 0
        batches = {}
        for table, k in Counter(names).items():
            pop = self._rows[table].popleft
            batches[table] = [pop() for _ in range(k)]
        fresh = not self._retried
        self._retried = max(0, self._retried - n)
        return names, batches, fresh

    def put_back(self, names: list[str], batches: Batches, at: float) -> None:
        """Return taken rows to the front (a failed flush): they are retried duplicate-safe."""
        if not names:
            return
        for table, rows in batches.items():
            self._rows[table].extendleft(reversed(rows))
        self._order.extendleft(reversed(names))
        self._arrivals.appendleft([len(names), at])
        self._retried = min(len(self._order), self._retried + len(names))

    def put_back_items(self, items: list[tuple[str, Row]], at: float) -> None:
        """Return rows taken by `take_all` to the front (a failed spill)."""
        for table, row in reversed(items):
            self._rows[table].appendleft(row)
            self._order.appendleft(table)
        if items:
            self._arrivals.appendleft([len(items), at])

    def remove(self, table: str, row_id: object) -> bool:
        """Take the row of `table` with id `row_id` out of the queue (a quarantined row)."""
        rows = self._rows[table]
        k = next((i for i, row in enumerate(rows) if row[0] == row_id), None)
        if k is None:
            return False
        del rows[k]
        seen = -1
        for j, name in enumerate(self._order):
            if name == table:
                seen += 1
                if seen == k:
                    del self._order[j]
                    break
        self._arrivals[0][0] -= 1  # its arrival time no longer matters: the oldest group's
        if not self._arrivals[0][0]:
            self._arrivals.popleft()
        self._retried = min(self._retried, len(self._order))
        return True

    def take_all(self) -> list[tuple[str, Row]]:
        """Remove and return every row as (table, row), in publication order."""
        rows = {t: iter(q) for t, q in self._rows.items()}
        items = [(t, next(rows[t])) for t in self._order]
        for q in self._rows.values():
            q.clear()
        self._order.clear()
        self._arrivals.clear()
        self._retried = 0
        return items

    def _whole_changes(self, names: list[str]) -> None:
        """Extend (or else shorten) `names` to end with the snapshot of its last change."""
        for k, table in enumerate(islice(self._order, MAX_EXTEND)):
            if table == "account_snapshots":
                names.extend(self._order.popleft() for _ in range(k + 1))
                return
        for j in range(len(names) - 2, -1, -1):
            if names[j] == "account_snapshots":
                self._order.extendleft(reversed(names[j + 1:]))
                del names[j + 1:]
                return
