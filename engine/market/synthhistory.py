"""Synthetic Binance USD-M history from a seed: 1m candles, every higher bucket, mark, funding.

The demo's market (`python run.py demo`). Per symbol a log-price path of 1m steps with
heavy-tailed (Student t, 4 degrees of freedom) returns scaled to the symbol's annual volatility
(`marketgen.PROFILES`: about 7.6 bp a minute for BTCUSDT) and a slowly drifting volatility
regime, so quiet and busy hours alternate as on the exchange. Every candle of a higher timeframe
(15m, 1h, 4h, 1d) is aggregated from the 1m candles in its bucket, so the timeframes agree. The
mark price is the last price with a small basis; funding settles every 8 hours at a
mean-reverting rate around 0.01 %. The same seed and span give the same numbers, whatever is
asked in whatever order. Pure numpy; the server that answers REST requests with it is apart.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from engine.market.marketgen import PROFILES

MINUTE = 60
FUNDING_EVERY = 8 * 3600
_YEAR_MINUTES = 365 * 1440


@dataclass(frozen=True, slots=True)
class SymbolPath:
    """One symbol's 1m series from `first` (epoch seconds, whole minutes)."""

    first: int
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    basis: np.ndarray  # mark / last - 1, per minute
    funding: np.ndarray  # the rate settled at first + k * 8 h (first aligned to 8 h)


def _rng(seed: int, symbol: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{symbol}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def make_path(symbol: str, first: int, minutes: int, seed: int) -> SymbolPath:
    """Return `minutes` 1m candles of `symbol` from `first` (a multiple of 8 hours)."""
    price, decimals, _qd, vol = PROFILES.get(symbol, (100.0, 2, 2, 0.8))
    rng = _rng(seed, symbol)
    sigma = vol / math.sqrt(_YEAR_MINUTES)
    # A volatility regime: a smoothed random walk of the log multiplier, mean one.
    steps = rng.normal(0.0, 0.008, minutes)
    regime = np.empty(minutes)
    level = 0.0
    for i, s in enumerate(steps):  # AR(1) with a half-life of about a day
        level = level * 0.9995 + s
        regime[i] = level
    scale = np.exp(np.clip(regime, -1.0, 1.0))
    scale /= math.sqrt(float(np.mean(scale ** 2)))  # the profile's volatility on average
    shocks = rng.standard_t(4, minutes) / math.sqrt(2.0)  # unit variance
    log_returns = sigma * scale * shocks
    close = price * np.exp(np.cumsum(log_returns))
    open_ = np.concatenate(([price], close[:-1]))
    wick = np.abs(rng.normal(0.0, 0.5, (2, minutes))) * sigma * scale
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    tick = 10.0 ** -decimals
    open_, high, low, close = (np.round(x / tick) * tick for x in (open_, high, low, close))
    volume = 1.2e6 / close * rng.lognormal(0.0, 0.4, minutes) * scale
    basis = rng.normal(0.0, 5e-5, minutes)
    settlements = minutes * MINUTE // FUNDING_EVERY + 1
    funding = np.empty(settlements)
    rate = 1e-4
    for k, z in enumerate(rng.normal(0.0, 4e-5, settlements)):
        rate = 1e-4 + 0.8 * (rate - 1e-4) + z
        funding[k] = min(7.5e-4, max(-7.5e-4, rate))
    return SymbolPath(first, open_, high, low, close, volume, basis, funding)


class SyntheticHistory:
    """Every symbol's synthetic history over [first, last): candles of any timeframe, funding."""

    def __init__(self, symbols: tuple[str, ...], first: float, last: float, seed: int) -> None:
        self.first = int(first) // FUNDING_EVERY * FUNDING_EVERY
        self.last = int(last)
        self.seed = seed
        minutes = (self.last - self.first) // MINUTE
        self.paths = {s: make_path(s, self.first, minutes, seed) for s in symbols}

    def candle(self, symbol: str, open_time: float, seconds: int = MINUTE,
               mark: bool = False) -> list[float] | None:
        """Return [open, high, low, close, volume] of the bucket, or None outside the span."""
        p = self.paths.get(symbol)
        i = (int(open_time) - self.first) // MINUTE
        n = max(1, seconds // MINUTE)
        if p is None or i < 0 or i + n > p.close.size:
            return None
        o, c = float(p.open[i]), float(p.close[i + n - 1])
        hi, lo = float(p.high[i:i + n].max()), float(p.low[i:i + n].min())
        if mark:  # the mark price's klines carry no volume
            k = 1 + float(p.basis[i + n - 1])
            return [o * k, hi * k, lo * k, c * k, 0.0]
        return [o, hi, lo, c, float(p.volume[i:i + n].sum())]

    def funding(self, symbol: str, start: float, end: float) -> list[tuple[int, float, float]]:
        """Return (settlement time, rate, mark price) of every settlement in [start, end]."""
        p = self.paths.get(symbol)
        if p is None:
            return []
        out = []
        t = max(self.first, -(-int(start) // FUNDING_EVERY) * FUNDING_EVERY)
        while t <= end and t < self.last:
            mark = self.candle(symbol, t, MINUTE, mark=True)
            if mark is not None:
                out.append((t, float(p.funding[(t - self.first) // FUNDING_EVERY]), mark[0]))
            t += FUNDING_EVERY
        return out

    def serve(self, symbol: str, open_time: float,
              seconds: int) -> tuple[float, float, float, float, float]:
        """Return a bucket for the fake Binance's klines (`CandleSource`); outside the span,
        a LookupError (the fake answers 500: a request the demo never makes)."""
        got = self.candle(symbol, open_time, seconds)
        if got is None:
            raise LookupError(f"{symbol} {open_time:.0f}: outside the synthetic history")
        o, hi, lo, c, v = got
        return o, hi, lo, c, v

    def funding_rows(self) -> dict[str, list[tuple[float, float, float]]]:
        """Return every symbol's settlements as the fake Binance's `funding` rows."""
        return {s: [(float(t), r, m) for t, r, m in self.funding(s, self.first, self.last)]
                for s in self.paths}
