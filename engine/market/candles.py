"""1-minute candle series per symbol: backfill and live merged with no holes and no duplicates.

A candle is keyed by its open time (whole epoch seconds, a multiple of 60). Closed candles come
from live `kline_1m` frames (`closed=True`) or from the REST backfill; whichever arrives first
for a minute is kept, so a merge never duplicates. `holes()` lists the minutes missing between
the oldest kept candle and a given minute, which is exactly what a backfill must fetch.
Higher timeframes are the 1m series resampled, maintained incrementally (engine/market/
buckets.py: at the next read, each 1m candle closed since the last one updates the open bucket
in place and a bucket left behind is appended to that timeframe's buffer; `arrays()` copies,
never resamples the whole history); candles
fetched for a higher timeframe fill in only the buckets older than the 1m series covers.

Each symbol's closed candles live in one column-major numpy array of 2 x `max_candles` slots
allocated (and written) when the symbol is first seen, the held ones `lo:hi`, oldest first: a
closed candle is one column written, not a new object, and when the series is full the oldest
one is dropped by moving `lo` (the held columns are moved back to the start only when `hi`
reaches the end), so the store's memory is the same on the first day as on the fifth.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import NamedTuple, cast

import numpy as np

from engine.events import Kline
from engine.market.buckets import Buckets, Fetched
from engine.settings import FeedSettings

MINUTE = 60


class Candle(NamedTuple):
    open_time: float  # epoch seconds
    open: float
    high: float
    low: float
    close: float
    volume: float


class OHLCV(NamedTuple):
    """Columns of a candle series as numpy float64 arrays, oldest first."""

    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return len(self.close)


@functools.lru_cache(maxsize=64)
def timeframe_seconds(tf: str) -> int:
    """Return the length of a timeframe like "1m", "15m", "4h", "1d" in seconds."""
    m = re.fullmatch(r"(\d+)([mhd])", tf)
    if not m or int(m[1]) <= 0:
        raise ValueError(f"bad timeframe {tf!r}")
    return int(m[1]) * {"m": 60, "h": 3600, "d": 86400}[m[2]]


def _to_ohlcv(rows: list[Candle]) -> OHLCV:
    if not rows:
        empty = np.empty(0, dtype=np.float64)
        return OHLCV(empty, empty, empty, empty, empty, empty)
    arr = np.asarray(rows, dtype=np.float64)
    return OHLCV(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5])


class _Series:
    __slots__ = ("aggs", "cap", "cols", "edits", "forming", "hi", "lo", "version")

    def __init__(self, capacity: int) -> None:
        # Columns (open_time, open, high, low, close, volume) x 2 * capacity, sorted by open
        # time; `lo:hi` (at most `capacity`) are held. Filled with NaN now so every page is
        # touched once, here.
        self.cap = capacity
        self.cols = np.full((6, 2 * capacity), np.nan, dtype=np.float64)
        self.lo = self.hi = 0
        self.forming: Kline | None = None  # the latest update of the candle still open
        self.version = 0  # changes with every change of the held candles
        self.edits = 0  # counts the changes other than appending (and dropping the oldest)
        self.aggs: dict[int, Buckets] = {}  # seconds -> that timeframe, kept up to date

    @property
    def n(self) -> int:
        return self.hi - self.lo

    def held(self) -> np.ndarray:
        return self.cols[:, self.lo:self.hi]

    def keys(self) -> np.ndarray:
        return self.cols[0, self.lo:self.hi]

    def rows(self) -> list[Candle]:
        return [Candle(*r) for r in self.held().T.tolist()]

    def compact(self) -> None:
        """Move the held columns back to the start of the buffer."""
        n = self.hi - self.lo
        self.cols[:, :n] = self.cols[:, self.lo:self.hi]
        self.lo, self.hi = 0, n

    def timeframe(self, seconds: int) -> Buckets:
        """Return `seconds`' buckets, brought up to the held candles."""
        agg = self.aggs.get(seconds)
        if agg is None:
            agg = self.aggs[seconds] = Buckets(seconds, self.cap)
        agg.sync(self.held(), self.edits, self.version)
        return agg


def resample(rows: list[Candle], seconds: int) -> list[Candle]:
    """Aggregate consecutive 1m candles into `seconds`-long buckets aligned to the epoch."""
    out: list[Candle] = []
    bucket = None
    o = h = lo = c = v = 0.0
    for r in rows:
        b = int(r.open_time) // seconds * seconds
        if b != bucket:
            if bucket is not None:
                out.append(Candle(float(bucket), o, h, lo, c, v))
            bucket, o, h, lo, c, v = b, r.open, r.high, r.low, r.close, r.volume
        else:
            h = max(h, r.high)
            lo = min(lo, r.low)
            c = r.close
            v += r.volume
    if bucket is not None:
        out.append(Candle(float(bucket), o, h, lo, c, v))
    return out


class CandleStore:
    """Closed 1m candles per symbol (at most `max_candles` newest), plus fetched higher-TF ones."""

    def __init__(self, max_candles: int | FeedSettings = 5000) -> None:
        if isinstance(max_candles, FeedSettings):
            max_candles = max_candles.max_candles
        self.max_candles = max_candles
        self._series: dict[str, _Series] = {}
        self._higher: dict[tuple[str, str], Fetched] = {}
        self._cache: dict[tuple[str, str, int], tuple[int, OHLCV]] = {}

    def _get(self, symbol: str) -> _Series:
        s = self._series.get(symbol)
        if s is None:
            s = self._series[symbol] = _Series(self.max_candles)
        return s

    # ------------------------------------------------------------------ writing

    def apply_kline(self, k: Kline) -> bool:
        """Apply a live 1m kline update; return True when a closed candle left a hole before it."""
        s = self._get(k.symbol)
        if not k.closed:
            s.forming = k  # the Candle is built only when forming() is read
            return False
        if s.forming is not None and s.forming.open_time <= k.open_time:
            s.forming = None
        key = int(k.open_time)
        hole = s.hi > s.lo and key > float(s.cols[0, s.hi - 1]) + MINUTE
        self._insert(s, key, (k.open_time, k.open, k.high, k.low, k.close, k.volume))
        return hole

    def merge(self, symbol: str, candles: Iterable[Candle]) -> int:
        """Add closed candles (e.g. a backfill), skipping minutes already held; return how many.

        A full series keeps the newest `max_candles` of what it held and what was added."""
        s = self._get(symbol)
        added = 0
        for c in candles:
            if self._insert(s, int(c.open_time), c):
                added += 1
        return added

    def _insert(self, s: _Series, key: int, candle: Candle | tuple[float, ...]) -> bool:
        if key % MINUTE:
            return False
        cols, lo, hi = s.cols, s.lo, s.hi
        row = (float(key), candle[1], candle[2], candle[3], candle[4], candle[5])
        if hi == lo or key > cols[0, hi - 1]:  # the usual case: the newest minute
            if hi == cols.shape[1]:
                s.compact()
                lo, hi = s.lo, s.hi
            if hi - lo == s.cap:
                s.lo = lo + 1  # the oldest falls off
                s.version += 1
            cols[:, hi] = row
            s.hi = hi + 1
            s.version += 1
            return True
        pos = lo + int(cols[0, lo:hi].searchsorted(key))
        if pos < hi and cols[0, pos] == key:
            return False
        s.edits += 1
        if hi - lo == s.cap:
            if pos == lo:
                s.edits -= 1
                return False  # older than everything kept in a full series
            cols[:, lo:pos - 1] = cols[:, lo + 1:pos]  # drop the oldest, make room before `pos`
            cols[:, pos - 1] = row
            s.version += 2
            return True
        if hi == cols.shape[1]:
            s.compact()
            pos, hi = pos - lo, s.hi
        cols[:, pos + 1:hi + 1] = cols[:, pos:hi]
        cols[:, pos] = row
        s.hi = hi + 1
        s.version += 1
        return True

    def merge_higher(self, symbol: str, timeframe: str, candles: Iterable[Candle]) -> None:
        """Keep candles fetched for a higher timeframe (used only where the 1m series has none)."""
        fetched = self._higher.get((symbol, timeframe))
        if fetched is None:
            fetched = self._higher[symbol, timeframe] = Fetched()
        fetched.merge(candles)
        self._get(symbol).version += 1

    # ------------------------------------------------------------------ reading

    def symbols(self) -> tuple[str, ...]:
        """Return every symbol with a series."""
        return tuple(self._series)

    def version(self, symbol: str) -> int:
        """Return a number that changes whenever `symbol`'s closed candles change."""
        s = self._series.get(symbol)
        return s.version if s else 0

    def closed(self, symbol: str) -> list[Candle]:
        """Return `symbol`'s closed 1m candles, oldest first."""
        s = self._series.get(symbol)
        return s.rows() if s else []

    def forming(self, symbol: str) -> Candle | None:
        """Return the latest update of the candle still open, if any."""
        k = s.forming if (s := self._series.get(symbol)) is not None else None
        return None if k is None else Candle(k.open_time, k.open, k.high, k.low, k.close,
                                             k.volume)

    def minutes(self, symbol: str) -> tuple[np.ndarray, int] | None:
        """Return `symbol`'s held 1m candles as a read-only view of the store's columns (open
        time, open, high, low, close, volume; oldest first; valid until the next write, no
        copy) and the count of changes other than appending or dropping the oldest (None: no
        candles). While that count stays the same, the candles held from any given one on are
        the same ones, bit for bit, each new one appended after them."""
        s = self._series.get(symbol)
        if s is None or not s.n:
            return None
        view = s.held()
        view.flags.writeable = False
        return view, s.edits

    def closed_key(self, symbol: str, timeframe: str) -> tuple[float, ...] | None:
        """Return a key that stays the same while `timeframe`'s closed candles (as `arrays` has
        them, without a bucket the 1m candles do not yet cover to its end) stay the same.

        Held 1m candles never change value: they are appended, dropped from the front or, a
        hole filled, inserted (counted in `edits`). So the closed buckets change only with an
        edit, a fetched candle, a newer closed bucket (the newest one completed, or a newer one
        begun after it was left incomplete; a bucket begun after the newest one completed
        changes nothing), or (the buckets the 1m series covers only partly at its start are
        taken fetched) the first full bucket moving; without fetched candles, the first 1m
        candle moving. None: no candles.
        """
        s = self._series.get(symbol)
        if s is None or not s.n:
            return None
        seconds = timeframe_seconds(timeframe)
        first, last = float(s.cols[0, s.lo]), float(s.cols[0, s.hi - 1])
        fetched = self._higher.get((symbol, timeframe))
        newest = last // seconds * seconds
        closed = newest if newest + seconds <= last + MINUTE else newest - seconds
        return (float(s.edits), float(fetched.changes) if fetched is not None else -1.0,
                -(-first // seconds) * seconds if fetched is not None else first, closed)

    def missing_bucket(self, symbol: str, timeframe: str) -> float | None:
        """Return the open time of the first higher-timeframe bucket missing between the
        fetched ones and those the 1m series builds (None: they join, or nothing was fetched).

        The buckets built from 1m start at the first one the series covers whole; the fetched
        ones must reach the bucket just before it, or that timeframe has a hole."""
        fetched = self._higher.get((symbol, timeframe))
        s = self._series.get(symbol)
        if fetched is None or not fetched.by_key or s is None or not s.n:
            return None
        seconds = timeframe_seconds(timeframe)
        first_full = -(-int(s.cols[0, s.lo]) // seconds) * seconds
        keys = fetched.columns()[0]
        i = int(keys.searchsorted(first_full))
        if i == 0:
            return None  # every fetched bucket is newer than the 1m series' start
        newest_older = int(keys[i - 1])
        return float(newest_older + seconds) if newest_older < first_full - seconds else None

    def last_closed_time(self, symbol: str) -> float | None:
        """Return the open time of the newest closed candle, if any."""
        s = self._series.get(symbol)
        return float(s.cols[0, s.hi - 1]) if s and s.n else None

    def missing(self, symbol: str, first: float, last: float) -> list[tuple[float, float]]:
        """Return (first, last) open times of each run of minutes in [first, last] not held."""
        lo = -(-int(first) // MINUTE) * MINUTE
        hi = int(last) // MINUTE * MINUTE
        if hi < lo:
            return []
        s = self._series.get(symbol)
        keys = s.keys() if s else np.empty(0)
        out: list[tuple[float, float]] = []
        cursor = lo
        for key in keys[int(np.searchsorted(keys, lo)):].astype(np.int64).tolist():
            if key > hi:
                break
            if key > cursor:
                out.append((float(cursor), float(key - MINUTE)))
            cursor = key + MINUTE
        if cursor <= hi:
            out.append((float(cursor), float(hi)))
        return out

    def holes(self, symbol: str, until: float) -> list[tuple[float, float]]:
        """Return the runs of missing minutes between the oldest held candle and `until`."""
        s = self._series.get(symbol)
        if not s or not s.n:
            return []
        return self.missing(symbol, float(s.cols[0, s.lo]), until)

    def candles(self, symbol: str, timeframe: str = "1m", limit: int | None = None) -> list[Candle]:
        """Return closed candles of `timeframe` (the newest higher-TF bucket may be partial)."""
        rows = self.closed(symbol)
        seconds = timeframe_seconds(timeframe)
        if seconds != MINUTE:
            built = resample(rows, seconds)
            held = self._higher.get((symbol, timeframe))
            fetched = held.by_key if held is not None else None
            if fetched:
                # A bucket the 1m series covers only partly at its start is better fetched whole.
                first_full = -(-int(rows[0].open_time) // seconds) * seconds if rows else None
                keep = [c for c in built if first_full is None or c.open_time >= first_full]
                start = keep[0].open_time if keep else float("inf")
                older = [cast(Candle, fetched[k]) for k in sorted(fetched) if k < start]
                built = older + keep
            rows = built
        if limit is not None:
            rows = rows[-limit:]
        return rows

    def _fetched(self, symbol: str, timeframe: str) -> np.ndarray | None:
        """Return the candles fetched for `timeframe` as columns, oldest first (None: none)."""
        fetched = self._higher.get((symbol, timeframe))
        return fetched.columns() if fetched is not None and fetched.by_key else None

    def arrays(self, symbol: str, timeframe: str = "1m", limit: int | None = None) -> OHLCV:
        """Return the candles of `timeframe` as numpy columns (cached until the series changes)."""
        key = (symbol, timeframe, limit or 0)
        version = self.version(symbol)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        # Straight from the columns, no Candle objects: the same values as candles() gives.
        s = self._series.get(symbol)
        seconds = timeframe_seconds(timeframe)
        if s is None:
            cols = np.empty((6, 0), dtype=np.float64)
        elif seconds == MINUTE:
            held = s.held()  # the series' buffer changes: the caller gets its own copy
            cols = (held[:, -limit:] if limit else held).copy()
        else:
            fetched = self._fetched(symbol, timeframe)
            cols = s.timeframe(seconds).columns(None if fetched is None else limit)  # a new array
            if fetched is not None:
                if s.n:  # a bucket the 1m series covers only partly at its start: fetched whole
                    first_full = -(-int(s.cols[0, s.lo]) // seconds) * seconds
                    cols = cols[:, int(cols[0].searchsorted(first_full)):]
                start = cols[0, 0] if cols.shape[1] else float("inf")
                older = fetched[:, :int(fetched[0].searchsorted(start))]
                if older.shape[1]:
                    cols = np.concatenate((older, cols), axis=1)
        if limit:
            cols = cols[:, -limit:]
        out = OHLCV(*cols) if cols.shape[1] else _to_ohlcv([])
        self._cache[key] = (version, out)
        return out
