"""Return statistics: per-cycle equity returns, Sharpe and Sortino, bootstrap uncertainty.

Returns are per-cycle simple returns of equity (r = E_i / E_(i-1) - 1, one point per cycle
snapshot). Sharpe = mean / sample standard deviation; Sortino = mean / downside deviation
(sqrt of the mean of min(r, 0)^2 over every return, target 0). Both are annualized by
sqrt(periods per year), a period being the observed mean time between cycle snapshots and a year
365 days (crypto trades around the clock). No risk-free rate is subtracted.

`ReturnStats` keeps the running mean, variance (Welford) and downside sum over the whole history,
plus the newest `window` (ts, return) pairs for the bootstrap. The running figures live in the
account state (every snapshot, a few hundred bytes); the series does not: it is derivable from the
persisted cycle snapshots, and recovery rebuilds it with `ReturnStats.series_from_equity`.
The pure functions below work on any return series (numpy).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np

SECONDS_PER_YEAR = 365 * 86_400
RETURNS_KEPT = 4032  # two weeks of 5-minute cycles
EULER_GAMMA = 0.5772156649015329
_FLAT = 1e-12  # a standard deviation below this is no variance at all

_PG_EPOCH = 946_684_800  # 2000-01-01T00:00:00Z: timestamptz is microseconds since then
Statistic = Callable[[np.ndarray], Any]


# ---------------------------------------------------------------- pure statistics


def _array(returns: Iterable[float]) -> np.ndarray:
    return np.asarray(list(returns) if not isinstance(returns, np.ndarray) else returns,
                      dtype=float)


def sharpe(returns: Iterable[float], periods_per_year: float) -> float | None:
    """Return the annualized Sharpe ratio (mean / sample std), None if undefined."""
    r = _array(returns)
    if r.size < 2:
        return None
    std = float(r.std(ddof=1))
    if not math.isfinite(std) or std <= _FLAT:
        return None
    return float(r.mean()) / std * math.sqrt(periods_per_year)


def sortino(returns: Iterable[float], periods_per_year: float) -> float | None:
    """Return the annualized Sortino ratio (mean / downside deviation), None if undefined."""
    r = _array(returns)
    if r.size < 2:
        return None
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if not math.isfinite(downside) or downside <= _FLAT:
        return None
    return float(r.mean()) / downside * math.sqrt(periods_per_year)


def _log_growth(r: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(r, -1 + 1e-15))  # equity never goes below zero


class _TotalReturn:
    """The compounded return of a series (of each row of a 2-D array)."""

    def __call__(self, returns: np.ndarray) -> np.ndarray | float:
        return np.prod(1.0 + np.asarray(returns, dtype=float), axis=-1) - 1.0

    @staticmethod
    def from_counts(counts: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Return the statistic of every resample given as draw counts per observation."""
        return np.expm1(counts @ _log_growth(r))


class _Sharpe:
    """The annualized Sharpe ratio of a series (of each row of a 2-D array); NaN if undefined."""

    def __init__(self, periods_per_year: float) -> None:
        self.scale = math.sqrt(periods_per_year)

    def __call__(self, r: np.ndarray) -> np.ndarray | float:
        std = np.std(r, axis=-1, ddof=1)
        mean = np.mean(r, axis=-1)
        return self._ratio(mean, std)

    def _ratio(self, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        flat = std <= _FLAT + 1e-6 * np.abs(mean)  # rounding noise is not variance
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(flat, np.nan, mean / np.where(flat, 1.0, std)) * self.scale

    def from_counts(self, counts: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Return the statistic of every resample given as draw counts per observation."""
        n = r.size
        mean = counts @ r / n
        var = np.maximum(counts @ (r * r) - n * mean * mean, 0.0) / (n - 1)
        return self._ratio(mean, np.sqrt(var))


total_return = _TotalReturn()


def sharpe_statistic(periods_per_year: float) -> Statistic:
    """Return a vectorized Sharpe statistic for `bootstrap_ci` (NaN where undefined)."""
    return _Sharpe(periods_per_year)


def _resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Return the (n_boot, n) resample indices of one seed."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


@lru_cache(maxsize=1)
def _counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Return how often each observation is drawn in each resample (same draws as `_resample`).

    Cached: every series of one length shares them, and a statistic that is a sum over draws
    becomes one matrix product instead of a gather of n_boot x n values. One entry: the traders
    of one refresh share a length, which grows by one each cycle, so older entries are never
    asked again (four held ~9 MB of stale matrices after a simulated day, 16 MB each at 2,016);
    `release_resamples` drops it when a refresh is done.
    """
    rows = np.arange(n_boot, dtype=np.int64)[:, None] * n
    flat = (_resample(n, n_boot, seed) + rows).ravel()
    counts = np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)
    counts.flags.writeable = False
    return counts


def release_resamples() -> None:
    """Free the cached count matrix (up to 16 MB) until the next bootstrap needs one."""
    _counts.cache_clear()


def _apply(statistic: Statistic, samples: np.ndarray) -> np.ndarray:
    """Apply `statistic` to every row: once on the whole matrix when it is vectorized."""
    try:
        out = statistic(samples)
    except (TypeError, ValueError, IndexError):  # a scalar-only statistic: one call per row
        out = None
    if isinstance(out, np.ndarray) and out.shape == (samples.shape[0],):
        return out.astype(float)
    values = [statistic(row) for row in samples]
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def bootstrap_ci(returns: Iterable[float], statistic: Statistic, *, n_boot: int = 2000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Return the percentile bootstrap CI of `statistic`, None with under 2 observations.

    `statistic` takes a numpy array of returns; if it also maps a (n_boot, n) matrix to one value
    per row (along the last axis) it is called once, otherwise once per resample. Resamples where
    it is undefined (None or NaN) are left out; None when more than half are.
    """
    r = _array(returns)
    if r.size < 2 or n_boot < 1:
        return None
    fast = getattr(statistic, "from_counts", None)
    if fast is not None:
        values = np.asarray(fast(_counts(r.size, n_boot, seed), r), dtype=float)
    else:
        values = _apply(statistic, r[_resample(r.size, n_boot, seed)])
    values = values[np.isfinite(values)]
    if values.size * 2 < n_boot:
        return None
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def prob_beats(returns_a: Sequence[float] | np.ndarray, returns_b: Sequence[float] | np.ndarray,
               *, n_boot: int = 2000, seed: int = 0) -> float | None:
    """Return P(A's total return > B's) by a paired bootstrap over aligned per-cycle returns.

    Both series are resampled with the same cycle indices; a tie counts one half, so two identical
    series give exactly 0.5. None with under 2 aligned returns or series of different lengths.
    """
    a, b = _array(returns_a), _array(returns_b)
    if a.size != b.size or a.size < 2 or n_boot < 1:
        return None
    counts = _counts(a.size, n_boot, seed)
    # A's compounded return beats B's exactly when its log growth does
    diff = counts @ _log_growth(a) - counts @ _log_growth(b)
    wins = np.count_nonzero(diff > 1e-12)
    ties = np.count_nonzero(np.abs(diff) <= 1e-12)
    return (wins + 0.5 * ties) / n_boot


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """Return the expected maximum Sharpe of n_trials unskilled trials (Bailey & López de Prado)."""
    if n_trials <= 1 or sharpe_variance <= 0:
        return 0.0
    z = NormalDist()
    return math.sqrt(sharpe_variance) * (
        (1 - EULER_GAMMA) * z.inv_cdf(1 - 1 / n_trials)
        + EULER_GAMMA * z.inv_cdf(1 - 1 / (n_trials * math.e)))


def deflated_sharpe(sharpe_hat: float, n_obs: int, n_trials: int, skew: float,
                    kurtosis: float, sharpe_variance: float) -> float:
    """Return the deflated Sharpe ratio: P(true Sharpe > the expected max of n_trials under null).

    Bailey & Lopez de Prado (2014): DSR = Phi((SR - SR0) sqrt(T - 1) / sqrt(1 - g3 SR
    + (g4 - 1) / 4 SR^2)), SR0 = sqrt(V[SR]) ((1 - e_g) Phi^-1(1 - 1/N) + e_g Phi^-1(1 - 1/(N e)))
    with e_g the Euler-Mascheroni constant, g3 the skewness and g4 the kurtosis.
    `sharpe_hat` and `sharpe_variance` (the variance of the trials' Sharpe estimates) are per
    observation period, not annualized;
    `kurtosis` is the plain (not excess) kurtosis, 3 for normal returns.
    """
    if n_obs < 2:
        return float("nan")
    sr0 = expected_max_sharpe(n_trials, sharpe_variance)
    denom = 1 - skew * sharpe_hat + (kurtosis - 1) / 4 * sharpe_hat ** 2
    if denom <= 0:
        return float("nan")
    return NormalDist().cdf((sharpe_hat - sr0) * math.sqrt(n_obs - 1) / math.sqrt(denom))


# ---------------------------------------------------------------- per-account running series


def instant(ts: float) -> float:
    """Return `ts` to the millisecond as it reads back from a timestamptz column.

    The column keeps whole microseconds (the writer rounds (ts - 2000-01-01) * 1e6); rounding
    those, not the float, to the millisecond gives a series rebuilt from the rows the same times.
    """
    us = round((ts - _PG_EPOCH) * 1_000_000) + _PG_EPOCH * 1_000_000
    return round(us / 1_000_000, 3)


@dataclass(slots=True)
class ReturnStats:
    """Running statistics of per-cycle equity returns, plus the newest `window` of them."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    down2: float = 0.0  # Σ min(r, 0)^2 over every return (Sortino)
    last_equity: float | None = None
    last_ts: float | None = None
    dt_sum: float = 0.0
    window: int = RETURNS_KEPT
    recent: deque[tuple[float, float]] = field(default_factory=deque)  # (ts, return), newest last

    def add(self, equity: float, ts: float) -> None:
        """Add one equity point of the series."""
        if self.last_equity is not None and self.last_ts is not None and self.last_equity > 0:
            if ts <= self.last_ts:
                return  # same instant (a second snapshot of one cycle): not a new period
            r = equity / self.last_equity - 1
            self.n += 1
            delta = r - self.mean
            self.mean += delta / self.n
            self.m2 += delta * (r - self.mean)
            self.down2 += min(r, 0.0) ** 2
            self.dt_sum += ts - self.last_ts
            # 10 significant digits on a millisecond time, as rebuilt from the stored rows
            self.recent.append((instant(ts), float(f"{r:.10g}")))
            self.trim()
        self.last_equity = equity
        self.last_ts = ts

    def trim(self, window: int | None = None) -> None:
        """Keep only the newest `window` returns (and use that window from now on)."""
        if window is not None:
            self.window = window
        while len(self.recent) > self.window:
            self.recent.popleft()

    def periods_per_year(self) -> float | None:
        """Return the annualization factor's periods: a year over the mean time between returns."""
        if self.n < 1 or self.dt_sum <= 0:
            return None
        return SECONDS_PER_YEAR / (self.dt_sum / self.n)

    def sharpe(self, min_obs: int = 2) -> float | None:
        """Return the annualized Sharpe ratio of the whole history, None under `min_obs`."""
        ppy = self.periods_per_year()
        if self.n < max(min_obs, 2) or ppy is None:
            return None
        std = math.sqrt(self.m2 / (self.n - 1))
        if std <= _FLAT:
            return None
        return self.mean / std * math.sqrt(ppy)

    def sortino(self, min_obs: int = 2) -> float | None:
        """Return the annualized Sortino ratio of the whole history, None under `min_obs`."""
        ppy = self.periods_per_year()
        if self.n < max(min_obs, 2) or ppy is None:
            return None
        downside = math.sqrt(self.down2 / self.n)
        if downside <= _FLAT:
            return None
        return self.mean / downside * math.sqrt(ppy)

    def series(self) -> np.ndarray:
        """Return the kept returns, oldest first."""
        return np.fromiter((r for _, r in self.recent), dtype=float, count=len(self.recent))

    def to_dict(self) -> dict[str, Any]:
        """Return the running figures as JSON-able data (the series is left out: it is rebuilt
        from the cycle snapshots, see `series_from_equity`)."""
        return {"n": self.n, "mean": self.mean, "m2": self.m2, "down2": self.down2,
                "last_equity": self.last_equity, "last_ts": self.last_ts,
                "dt_sum": self.dt_sum, "window": self.window}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReturnStats:
        """Rebuild from `to_dict` output; a series stored by older versions is read too."""
        keys = ("n", "mean", "m2", "down2", "last_equity", "last_ts", "dt_sum", "window")
        stats = cls(**{k: data[k] for k in keys if k in data})
        recent = data.get("recent") or {}
        if isinstance(recent, list):  # [[ts, r], ...], as first stored
            recent = {"t": [], "r": []} if not recent else {
                "t": [recent[0][0]] + [b[0] - a[0] for a, b in itertools.pairwise(recent)],
                "r": [r for _, r in recent]}
        ts, times = 0.0, []
        for i, step in enumerate(recent.get("t") or ()):
            ts = round(float(step) if i == 0 else ts + float(step), 3)
            times.append(ts)
        stats.recent = deque(zip(times, map(float, recent.get("r") or ()), strict=False))
        return stats

    @classmethod
    def series_from_equity(cls, points: Iterable[tuple[float, float]],
                           kept: int) -> list[tuple[float, float]]:
        """Return the newest `kept` (ts, return) pairs that `add` makes of these (ts, equity)
        points, oldest first.

        `points` are an account's cycle snapshots in the order they were made. From its first
        point on, the answer is the kept series of the account that made them; from a later point
        on, all but possibly the first return (that point may have been a second snapshot of one
        instant, which `add` skipped): ask for one more than needed and drop it.
        """
        stats = cls(window=kept)
        for ts, equity in points:
            stats.add(equity, ts)
        return list(stats.recent)

    def restore_series(self, series: Iterable[Sequence[float]] | None,
                       window: int | None = None) -> None:
        """Use `series` ((ts, return) pairs, oldest first) as the kept returns, when given, and
        keep only the newest `window` of them (used from now on)."""
        if series is not None:
            self.recent = deque((float(ts), float(r)) for ts, r in series)
        self.trim(window)
