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
    tr = np.maximum(h - lo, np.maximum(np.abs(h - prev), np.abs(lo - prev)))
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
    """Return the newest value of every standard indicator for one candle series."""
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
