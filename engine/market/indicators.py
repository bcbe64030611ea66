"""Technical indicators: pure numpy, full-length float64 arrays, NaN until enough data.

Definitions (the textbook ones, also used by TA-Lib where noted):
* SMA(n): mean of the last n values.
* EMA(n): alpha = 2/(n+1), seeded with the SMA of the first n values (first value at index n-1).
* RSI(n), Wilder: average gain/loss seeded with the mean of the first n changes, then
  avg = (avg*(n-1) + x)/n; RSI = 100 - 100/(1 + avg_gain/avg_loss) (100 when there is no loss,
  50 when the price did not move). First value at index n.
* MACD(12, 26, 9): EMA12 - EMA26; signal = EMA9 of the MACD line (seeded from its first 9 values);
  histogram = MACD - signal.
* ATR(n), Wilder: true range TR[0] = high-low, TR[i] = max(h-l, |h-c[i-1]|, |l-c[i-1]|); the first
  ATR (index n-1) is the mean of the first n TRs, then ATR = (ATR*(n-1) + TR)/n.
* Bollinger(20, 2): middle = SMA20, bands = middle ± 2 population standard deviations.

`summary` gives the newest value of each; `Running` keeps them running over a series fed
candle by candle, to the same bits as the full-length functions (the snapshot extends it by the
candles closed since the last cycle instead of recomputing).
"""

from __future__ import annotations

import math

import numpy as np

_NAN = math.nan


def _as_array(values: np.ndarray | list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def sma(values: np.ndarray | list[float], n: int) -> np.ndarray:
    """Return the simple moving average of `values` over `n` periods."""
    x = _as_array(values)
    out = np.full(len(x), _NAN)
    if n <= 0 or len(x) < n:
        return out
    csum = np.cumsum(np.insert(x, 0, 0.0))
    out[n - 1 :] = (csum[n:] - csum[:-n]) / n
    return out


def _smooth(x: np.ndarray, start: int, seed: float, alpha: float) -> np.ndarray:
    """Return out[start] = seed, then out[i] = out[i-1] + alpha*(x[i] - out[i-1])."""
    out = np.full(len(x), _NAN)
    prev = seed
    out[start] = prev
    values = x.tolist()
    for i in range(start + 1, len(values)):
        prev = prev + alpha * (values[i] - prev)
        out[i] = prev
    return out


def ema(values: np.ndarray | list[float], n: int) -> np.ndarray:
    """Return the exponential moving average of `values` (SMA-seeded, alpha = 2/(n+1))."""
    x = _as_array(values)
    valid = np.flatnonzero(~np.isnan(x))
    if n <= 0 or len(valid) < n:
        return np.full(len(x), _NAN)
    first = int(valid[0])  # leading NaNs (e.g. a MACD line) are skipped
    seed_end = first + n - 1
    return _smooth(x, seed_end, float(np.mean(x[first : seed_end + 1])), 2.0 / (n + 1))


def rsi(close: np.ndarray | list[float], n: int = 14) -> np.ndarray:
    """Return Wilder's relative strength index of `close`."""
    c = _as_array(close)
    out = np.full(len(c), _NAN)
    if n <= 0 or len(c) <= n:
        return out
    delta = np.diff(c)
    gains = np.where(delta > 0, delta, 0.0).tolist()
    losses = np.where(delta < 0, -delta, 0.0).tolist()
    avg_gain = sum(gains[:n]) / n
    avg_loss = sum(losses[:n]) / n
    out[n] = _rsi_value(avg_gain, avg_loss)
    for i in range(n, len(gains)):
        avg_gain = (avg_gain * (n - 1) + gains[i]) / n
        avg_loss = (avg_loss * (n - 1) + losses[i]) / n
        out[i + 1] = _rsi_value(avg_gain, avg_loss)
    return out


def _rsi_value(avg_gain: float, avg_loss: float) -> float:
    if avg_loss == 0.0:
        return 50.0 if avg_gain == 0.0 else 100.0
    return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)


def macd(
    close: np.ndarray | list[float], fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (macd line, signal line, histogram) of `close`."""
    c = _as_array(close)
    line = ema(c, fast) - ema(c, slow)
    sig = ema(line, signal)
    return line, sig, line - sig


def true_range(
    high: np.ndarray | list[float], low: np.ndarray | list[float], close: np.ndarray | list[float]
) -> np.ndarray:
    """Return the true range of each candle (the first one is high - low)."""
    h, lo, c = _as_array(high), _as_array(low), _as_array(close)
    if len(h) == 0:
        return np.empty(0)
    prev = np.concatenate(([c[0]], c[:-1]))
    tr: np.ndarray = np.maximum(h - lo, np.maximum(np.abs(h - prev), np.abs(lo - prev)))
    tr[0] = h[0] - lo[0]
    return tr


def atr(
    high: np.ndarray | list[float],
    low: np.ndarray | list[float],
    close: np.ndarray | list[float],
    n: int = 14,
) -> np.ndarray:
    """Return Wilder's average true range."""
    tr = true_range(high, low, close)
    if n <= 0 or len(tr) < n:
        return np.full(len(tr), _NAN)
    return _smooth(tr, n - 1, float(np.mean(tr[:n])), 1.0 / n)


def bollinger(
    close: np.ndarray | list[float], n: int = 20, k: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (upper, middle, lower) Bollinger bands (population standard deviation)."""
    c = _as_array(close)
    mid = sma(c, n)
    if len(c) < n or n <= 0:
        return mid.copy(), mid, mid.copy()
    windows = np.lib.stride_tricks.sliding_window_view(c, n)
    std = np.full(len(c), _NAN)
    std[n - 1 :] = windows.std(axis=1)
    return mid + k * std, mid, mid - k * std


def last(values: np.ndarray) -> float | None:
    """Return the newest value of an indicator array, or None when it is missing or NaN."""
    if len(values) == 0:
        return None
    v = float(values[-1])
    return None if math.isnan(v) else v


EMA_PERIODS = (20, 50)  # the EMAs every snapshot carries, per timeframe


def summary(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> dict[str, float | None]:
    """Return the newest value of every standard indicator for one candle series.

    The same numbers, bit for bit, as the newest values of the full-length functions above
    (`summary_full`; `tests/market/test_indicators.py` holds them equal), through `Running`.
    A series holding a NaN takes the full-length path.
    """
    h, lo, c = _as_array(high), _as_array(low), _as_array(close)
    if np.isnan(c).any() or np.isnan(h).any() or np.isnan(lo).any():
        return summary_full(h, lo, c)
    running = Running()
    running.extend(h.tolist(), lo.tolist(), c.tolist())
    return running.values()


_SEEDS = (12, 20, 26, 50)  # the EMA periods kept running: MACD's fast/slow and EMA_PERIODS
_WARM = 50  # candles after which every recursion is seeded (EMA50; MACD signal at 34, RSI 15)


class Running:
    """Every indicator of `summary` kept running over a series, extended candle by candle.

    Each recursion keeps its state (the EMAs, Wilder's averages, the MACD signal, the running
    sum behind the SMA) and performs, per new candle, the same floating-point operations in the
    same order as the full-length functions above, seeds included (numpy means of the first n
    values), so `values()` after feeding a series equals `summary_full` of that series bit for
    bit. Extending by k candles costs O(k), not O(length): a snapshot every 5 minutes adds 5.
    """

    __slots__ = ("atr", "closes", "count", "cums", "ema", "gain", "head", "line", "loss", "macd",
                 "prev", "signal", "tr")

    def __init__(self) -> None:
        self.count = 0
        self.ema: dict[int, float] = {}
        self.head: list[float] = []  # the first _WARM closes (the EMA seeds)
        self.line: list[float] = []  # the first 9 MACD values (the signal's seed)
        self.macd: float | None = None  # the newest MACD value
        self.signal: float | None = None
        self.gain = self.loss = 0.0  # RSI: the first 14 changes' sums, then Wilder's averages
        self.tr: list[float] = []  # the first 14 true ranges (the ATR's seed)
        self.atr: float | None = None
        self.cums: list[float] = [0.0]  # the newest 21 running sums (np.cumsum from 0.0)
        self.closes: list[float] = []  # the newest 20 closes
        self.prev: float | None = None  # the previous close

    def extend(self, high: list[float], low: list[float], close: list[float]) -> None:
        """Feed the next candles (oldest first; no NaN)."""
        i, size = 0, len(close)
        while i < size and self.count < _WARM:  # seeds still forming: the general step
            self._step(high[i], low[i], close[i])
            i += 1
        if i == size:
            return
        # Every recursion seeded: the same operations, on locals.
        e12, e20, e26, e50 = (self.ema[n] for n in _SEEDS)
        signal, gain, loss, atr, prev = self.signal, self.gain, self.loss, self.atr, self.prev
        a12, a20, a26, a50 = (2.0 / (n + 1) for n in _SEEDS)
        a9, a14 = 2.0 / 10, 1.0 / 14
        cums, closes = self.cums, self.closes
        total = cums[-1]
        for h, lo, c in zip(high[i:], low[i:], close[i:], strict=True):
            e12 = e12 + a12 * (c - e12)
            e20 = e20 + a20 * (c - e20)
            e26 = e26 + a26 * (c - e26)
            e50 = e50 + a50 * (c - e50)
            macd = e12 - e26
            signal = signal + a9 * (macd - signal)  # type: ignore[operator]
            tr = max(h - lo, max(abs(h - prev), abs(lo - prev)))  # type: ignore[operator]
            atr = atr + a14 * (tr - atr)  # type: ignore[operator]
            delta = c - prev  # type: ignore[operator]
            gain = (gain * 13 + (delta if delta > 0 else 0.0)) / 14
            loss = (loss * 13 + (-delta if delta < 0 else 0.0)) / 14
            total = total + c
            cums.append(total)
            closes.append(c)
            prev = c
        del cums[:-21], closes[:-20]
        self.ema.update(zip(_SEEDS, (e12, e20, e26, e50), strict=True))
        self.macd = macd
        self.signal, self.gain, self.loss, self.atr, self.prev = signal, gain, loss, atr, prev
        self.count += size - i

    def _step(self, h: float, lo: float, c: float) -> None:
        """Feed one candle while some seed is still forming."""
        ema, count, prev = self.ema, self.count, self.prev
        self.head.append(c)
        for n in _SEEDS:
            if n in ema:
                e = ema[n]
                ema[n] = e + 2.0 / (n + 1) * (c - e)
            elif count == n - 1:
                ema[n] = float(np.mean(np.asarray(self.head[:n], dtype=np.float64)))
        if count >= 25:
            self._macd(ema[12] - ema[26])
        if prev is None:
            tr = h - lo
        else:
            tr = max(h - lo, max(abs(h - prev), abs(lo - prev)))
            self._rsi(c - prev, count)
        self._atr(tr, count)
        self.cums.append(self.cums[-1] + c)
        del self.cums[:-21]
        self.closes.append(c)
        del self.closes[:-20]
        self.prev = c
        self.count = count + 1

    def _macd(self, value: float) -> None:
        self.macd = value
        if self.signal is not None:
            self.signal = self.signal + 2.0 / 10 * (value - self.signal)
        else:
            self.line.append(value)
            if len(self.line) == 9:
                self.signal = float(np.mean(np.asarray(self.line, dtype=np.float64)))

    def _rsi(self, delta: float, count: int) -> None:
        gain = delta if delta > 0 else 0.0
        loss = -delta if delta < 0 else 0.0
        if count <= 14:  # changes 1..14: the seed sums (then means, at the 14th)
            self.gain, self.loss = self.gain + gain, self.loss + loss
            if count == 14:
                self.gain, self.loss = self.gain / 14, self.loss / 14
        else:
            self.gain = (self.gain * 13 + gain) / 14
            self.loss = (self.loss * 13 + loss) / 14

    def _atr(self, tr: float, count: int) -> None:
        if self.atr is not None:
            self.atr = self.atr + 1.0 / 14 * (tr - self.atr)
        else:
            self.tr.append(tr)
            if count == 13:
                self.atr = float(np.mean(np.asarray(self.tr, dtype=np.float64)))

    def values(self) -> dict[str, float | None]:
        """Return the newest value of every indicator (None until enough candles)."""
        count, ema = self.count, self.ema
        mid = upper = lower = None
        if count >= 20:
            cums = self.cums
            mid = (cums[-1] - cums[-21]) / 20
            std = _std(self.closes)
            upper, lower = mid + 2.0 * std, mid - 2.0 * std
        line, signal = self.macd, self.signal
        return {
            "close": self.prev,
            **{f"ema{n}": ema.get(n) for n in EMA_PERIODS},
            "sma20": mid,
            "rsi14": _rsi_value(self.gain, self.loss) if count > 14 else None,
            "macd": line,
            "macd_signal": signal,
            "macd_hist": None if signal is None else line - signal,  # type: ignore[operator]
            "atr14": self.atr,
            "bb_upper": upper,
            "bb_mid": mid,
            "bb_lower": lower,
        }


def _sum(xs: list[float]) -> float:
    """Return `np.add.reduce` of 8 to 128 float64 values, bit for bit: numpy's pairwise sum
    (eight running sums, combined pairwise, then the rest in order) added to 0.0."""
    r0, r1, r2, r3, r4, r5, r6, r7 = xs[:8]
    n = len(xs)
    end = n - n % 8
    for i in range(8, end, 8):
        r0 += xs[i]
        r1 += xs[i + 1]
        r2 += xs[i + 2]
        r3 += xs[i + 3]
        r4 += xs[i + 4]
        r5 += xs[i + 5]
        r6 += xs[i + 6]
        r7 += xs[i + 7]
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for x in xs[end:]:
        total += x
    return 0.0 + total


def _std(xs: list[float]) -> float:
    """Return `float(np.asarray(xs).std())` bit for bit, without an array for a handful of
    values: the same mean, deviations, squares and sums (`_sum`), in the same order."""
    n = len(xs)
    if not 8 <= n <= 128:
        return float(np.asarray(xs, dtype=np.float64).std())
    mean = _sum(xs) / n
    return math.sqrt(_sum([(x - mean) * (x - mean) for x in xs]) / n)


def summary_full(high: np.ndarray, low: np.ndarray, close: np.ndarray
                 ) -> dict[str, float | None]:
    """Return `summary` from the full-length indicator arrays (the definition it must equal)."""
    line, sig, hist = macd(close)
    upper, mid, lower = bollinger(close)
    return {
        "close": last(close),
        **{f"ema{n}": last(ema(close, n)) for n in EMA_PERIODS},
        "sma20": last(mid),
        "rsi14": last(rsi(close, 14)),
        "macd": last(line),
        "macd_signal": last(sig),
        "macd_hist": last(hist),
        "atr14": last(atr(high, low, close, 14)),
        "bb_upper": last(upper),
        "bb_mid": last(mid),
        "bb_lower": last(lower),
    }
