"""Each trader's recent equity curve, as the control API's `/equity` serves it.

A fixed ring of two float arrays per trader: the newest `size` (time, equity) points, 16 bytes
each, allocated once. A deque of (ts, equity) tuples took about 110 bytes a point and grew for
the first `size` points (a snapshot a minute and one a cycle: about 1 MB a simulated day for six
traders, which the 24-hour soak counted as growth); the ring's memory is the same from its first
point to its last.
"""

from __future__ import annotations

from array import array


class EquityCurve:
    """The newest `size` (ts, equity) points of one trader, oldest first."""

    __slots__ = ("_count", "_equity", "_next", "_ts", "size")

    def __init__(self, size: int = 5000) -> None:
        if size < 1:
            raise ValueError("an equity curve keeps at least one point")
        self.size = size
        self._ts = array("d", bytes(8 * size))
        self._equity = array("d", bytes(8 * size))
        self._next = 0  # where the next point goes
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, ts: float, equity: float) -> None:
        """Add the newest point; past `size` points, the oldest is overwritten."""
        i = self._next
        self._ts[i] = ts
        self._equity[i] = equity
        self._next = i + 1 if i + 1 < self.size else 0
        if self._count < self.size:
            self._count += 1

    def points(self) -> list[tuple[float, float]]:
        """Return every kept point, oldest first."""
        start = (self._next - self._count) % self.size
        order = [*range(start, self.size), *range(start)][:self._count]
        ts, equity = self._ts, self._equity
        return [(ts[i], equity[i]) for i in order]

    def last(self) -> tuple[float, float] | None:
        """Return the newest point, or None before the first."""
        if not self._count:
            return None
        i = self._next - 1 if self._next else self.size - 1
        return self._ts[i], self._equity[i]
