"""Higher-timeframe candles kept up to date from a 1m series, not resampled on every read.

`Buckets` holds one timeframe of one symbol: the buckets the 1m series has moved past, in a
pre-sized column-major numpy buffer (oldest first), and the newest bucket (still open while
later 1m candles may join it) as a small list updated in place. `sync` folds in only what
changed since the last call: closed 1m candles appended after the newest one folded (each
updates the open bucket; a candle of a later bucket closes it into the buffer), and oldest
minutes dropped from a full 1m series (the buckets before the new oldest minute leave the
buffer and the first bucket is recomputed from the minutes still held). Any other change (a hole
backfilled in the middle of the series) rebuilds the timeframe once with `resample_columns`.

The values are exactly those a full resample of the held 1m candles gives: open of the first
minute, high/low with numpy's NaN propagation, close of the last minute, volume summed left
to right (the test in tests/market/test_buckets.py compares them on random series with holes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

_SMALL = 64  # at most this many new minutes are folded one by one, more with numpy


def resample_columns(cols: np.ndarray, seconds: int) -> np.ndarray:
    """Resample columns (open_time, open, high, low, close, volume) x n, oldest first, into
    `seconds`-long buckets aligned to the epoch; volumes summed left to right (as
    `candles.resample` does)."""
    n = cols.shape[1]
    if not n:
        return np.empty((6, 0), dtype=np.float64)
    buckets = cols[0] // seconds * seconds
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], n]
    out = np.empty((6, len(starts)), dtype=np.float64)
    out[0] = buckets[starts]
    out[1] = cols[1, starts]
    out[2] = np.maximum.reduceat(cols[2], starts)
    out[3] = np.minimum.reduceat(cols[3], starts)
    out[4] = cols[4, ends - 1]
    volume = cols[5].tolist()
    out[5] = [sum(volume[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    return out


def _max(a: float, b: float) -> float:
    """np.maximum on two floats: NaN when either is NaN."""
    return a if a >= b else (b if b > a else math.nan)


def _min(a: float, b: float) -> float:
    """np.minimum on two floats: NaN when either is NaN."""
    return a if a <= b else (b if b < a else math.nan)


class Buckets:
    """One higher timeframe of one symbol's 1m series, maintained incrementally."""

    __slots__ = ("cols", "cur", "edits", "first", "hi", "lo", "seconds", "synced", "upto")

    def __init__(self, seconds: int, minutes: int) -> None:
        self.seconds = seconds
        # Room for twice the buckets `minutes` contiguous minutes span (holes can make more:
        # the buffer then grows); filled with NaN now so its pages are touched once, here.
        self.cols = np.full((6, 2 * (minutes * 60 // seconds + 2)), np.nan, dtype=np.float64)
        self.lo = self.hi = 0  # cols[:, lo:hi] are the buckets before the newest
        self.cur: list[float] | None = None  # the newest bucket: open_time, o, h, l, c, v
        self.synced = -1  # the series version folded in
        self.edits = -1  # the series' count of edits in its middle, when last synced
        self.upto = -math.inf  # the newest 1m open time folded in
        self.first = math.nan  # the oldest 1m open time held when last synced

    def sync(self, minutes: np.ndarray, edits: int, version: int) -> None:
        """Bring the buckets up to the 1m columns `minutes` (6 x n, oldest first)."""
        if version == self.synced:
            return
        n = minutes.shape[1]
        if not n:
            self.lo = self.hi = 0
            self.cur = None
        elif edits != self.edits or minutes[0, 0] > self.upto:
            self._rebuild(minutes)  # a hole filled, or nothing folded so far is held any more
        else:
            if minutes[0, n - 1] > self.upto:
                self._fold(minutes[:, int(minutes[0].searchsorted(self.upto, "right")):])
            if minutes[0, 0] != self.first:
                self._front(minutes)
        self.synced, self.edits = version, edits
        if n:
            self.first, self.upto = float(minutes[0, 0]), float(minutes[0, n - 1])

    def columns(self, limit: int | None = None) -> np.ndarray:
        """Return a new (6 x m) array of every bucket (the newest last, maybe partial)."""
        if self.cur is None:
            return np.empty((6, 0), dtype=np.float64)
        lo = self.lo if not limit else max(self.lo, self.hi - limit + 1)
        out = np.empty((6, self.hi - lo + 1), dtype=np.float64)
        out[:, :-1] = self.cols[:, lo:self.hi]
        out[:, -1] = self.cur
        return out

    # ------------------------------------------------------------------ internals

    def _rebuild(self, minutes: np.ndarray) -> None:
        out = resample_columns(minutes, self.seconds)
        self.lo = self.hi = 0
        self._push(out[:, :-1])
        self.cur = out[:, -1].tolist()

    def _fold(self, new: np.ndarray) -> None:
        """Fold in minutes newer than every minute folded so far."""
        seconds = self.seconds
        cur = self.cur
        if cur is not None:  # the first new minutes may still belong to the newest bucket
            same = int(new[0].searchsorted(cur[0] + seconds))
            for _, _, h, lo, c, v in new[:, :same].T.tolist():
                cur[2], cur[3], cur[4] = _max(cur[2], h), _min(cur[3], lo), c
                cur[5] += v
            new = new[:, same:]
        if not new.shape[1]:
            return
        if new.shape[1] > _SMALL:
            out = resample_columns(new, seconds)
            if cur is not None:
                self._push(np.asarray(cur, dtype=np.float64)[:, None])
            self._push(out[:, :-1])
            self.cur = out[:, -1].tolist()
            return
        for t, o, h, lo, c, v in new.T.tolist():
            bucket = t // seconds * seconds
            if cur is None or bucket != cur[0]:
                if cur is not None:
                    self._push(np.asarray(cur, dtype=np.float64)[:, None])
                cur = [bucket, o, h, lo, c, v]
            else:
                cur[2], cur[3], cur[4] = _max(cur[2], h), _min(cur[3], lo), c
                cur[5] += v
        self.cur = cur

    def _front(self, minutes: np.ndarray) -> None:
        """The oldest minutes fell off: drop the buckets before the new oldest minute and
        recompute the first bucket from the minutes still held."""
        seconds = self.seconds
        first = float(minutes[0, 0] // seconds * seconds)
        self.lo += int(self.cols[0, self.lo:self.hi].searchsorted(first))
        end = int(minutes[0].searchsorted(first + seconds))
        part = minutes[:, :end]
        row = [first, float(part[1, 0]), float(part[2].max()), float(part[3].min()),
               float(part[4, end - 1]), sum(part[5].tolist())]
        if self.lo < self.hi and self.cols[0, self.lo] == first:
            self.cols[:, self.lo] = row
        else:  # no bucket before the newest is left: the first bucket is the newest
            self.cur = row

    def _push(self, block: np.ndarray) -> None:
        """Append the buckets of `block` (6 x m) after those held."""
        m = block.shape[1]
        if not m:
            return
        cap = self.cols.shape[1]
        if self.hi + m > cap:
            n = self.hi - self.lo
            if n + m > cap // 2:  # keep at least half the buffer free after a move
                grown = np.full((6, 2 * (n + m)), np.nan, dtype=np.float64)
                grown[:, :n] = self.cols[:, self.lo:self.hi]
                self.cols = grown
            else:
                self.cols[:, :n] = self.cols[:, self.lo:self.hi]
            self.lo, self.hi = 0, n
        self.cols[:, self.hi:self.hi + m] = block
        self.hi += m


class Fetched:
    """Candles fetched for one higher timeframe (a REST backfill, a backtest stream's closed
    buckets), by open time and as columns sorted by it: a candle newer than all held is one
    column written; anything else (an older or a repeated open time) rebuilds the columns
    once, on the next read."""

    __slots__ = ("by_key", "changes", "cols", "last", "n", "stale")

    def __init__(self) -> None:
        self.changes = 0  # counts the merges
        self.by_key: dict[int, tuple[float, ...]] = {}  # int(open_time) -> the candle
        self.cols = np.empty((6, 64), dtype=np.float64)
        self.n = 0
        self.last: int | None = None  # the newest key in `cols`
        self.stale = False  # `cols` no longer matches `by_key`

    def merge(self, candles: Iterable[tuple[float, ...]]) -> None:
        """Keep `candles` (a later candle of an open time replaces an earlier one)."""
        self.changes += 1
        for c in candles:
            key = int(c[0])
            if not self.stale and (self.last is None or key > self.last):
                if self.n == self.cols.shape[1]:
                    grown = np.empty((6, 2 * self.n), dtype=np.float64)
                    grown[:, :self.n] = self.cols
                    self.cols = grown
                self.cols[:, self.n] = c
                self.n += 1
                self.last = key
            else:
                self.stale = True
            self.by_key[key] = c

    def columns(self) -> np.ndarray:
        """Return the held candles as columns, oldest first (a view: do not keep or write)."""
        if self.stale:
            rows = [self.by_key[k] for k in sorted(self.by_key)]
            self.cols = np.asarray(rows, dtype=np.float64).T.copy()
            self.n = len(rows)
            self.last = max(self.by_key)
            self.stale = False
        return self.cols[:, :self.n]
