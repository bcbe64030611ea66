"""Return statistics: per-cycle equity returns, Sharpe and Sortino, bootstrap uncertainty.

The bootstrap is Politis & Romano's (1994) stationary bootstrap: resamples are made of blocks of
consecutive returns (wrapping around the end) whose lengths are geometric with mean `block`, so
the dependence between neighbouring returns (momentum, volatility clusters, a position held over
several cycles) is kept. The mean block length is chosen from the series itself
(`optimal_block`: Politis & White 2004 with Patton, Politis & White's 2009 correction), rounded
up to whole cycles so resample matrices can be shared. At a few hundred returns the stationary
bootstrap's spread is too narrow on dependent returns (it leaves out the autocovariances beyond
its blocks, and every sample autocovariance around the sample mean is biased low), so the
resampled statistics are widened about the point estimate by `spread_factor`, never below 1: the
square root of the ratio of the long-run variance to the bootstrap's own variance of the mean,
times t(nu) / z at the interval's quantile. The long-run variance is Andrews & Monahan's (1992)
AR(1)-prewhitened flat-top lag-window estimate (Politis & Romano 1995, corrected for the sample
mean), nu its degrees of freedom by the delta method (`_prewhitened`).

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
    out: np.ndarray = np.log1p(np.maximum(r, -1 + 1e-15))  # equity never goes below zero
    return out


class _TotalReturn:
    """The compounded return of a series (of each row of a 2-D array)."""

    def __call__(self, returns: np.ndarray) -> np.ndarray | float:
        out: np.ndarray | float = np.prod(1.0 + np.asarray(returns, dtype=float), axis=-1) - 1.0
        return out

    @staticmethod
    def from_counts(counts: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Return the statistic of every resample given as draw counts per observation."""
        out: np.ndarray = np.expm1(counts @ _log_growth(r))
        return out


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


class _Mean:
    """The mean per-cycle return of a series (of each row of a 2-D array)."""

    def __call__(self, returns: np.ndarray) -> np.ndarray | float:
        return np.mean(np.asarray(returns, dtype=float), axis=-1)  # type: ignore[no-any-return]

    @staticmethod
    def from_counts(counts: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Return the statistic of every resample given as draw counts per observation."""
        return counts @ r / r.size  # type: ignore[no-any-return]


mean_return = _Mean()


def optimal_block(x: Sequence[float] | np.ndarray) -> float:
    """Return the stationary bootstrap's mean block length for `x` (Politis & White 2004, with
    the correction of Patton, Politis & White 2009), between 1 and min(3 sqrt(n), n / 3).

    The autocorrelations are cut at 2M, M being the first lag after which K = max(5, log10 n)
    autocorrelations in a row are insignificant (|rho| < 2 sqrt(log10 n / n)); with the flat-top
    window lambda, G = sum lambda(k/M) |k| R(k) and g = sum lambda(k/M) R(k) over |k| <= M, and
    the block is (2 G^2 / (2 g^2))^(1/3) n^(1/3).
    """
    r = _array(x)
    n = r.size
    window = _window(r)
    if window is None:
        return 1.0
    acv, m = window
    b_max = math.ceil(min(3 * math.sqrt(n), n / 3))
    k = np.arange(1, m + 1)
    lam = _flat_top(m)
    g_big = float(np.sum(2 * lam * k * acv[1:m + 1]))
    lr_var = float(acv[0] + np.sum(2 * lam * acv[1:m + 1]))
    if lr_var <= 0:
        return 1.0
    block = (2 * g_big ** 2 / (2 * lr_var ** 2)) ** (1 / 3) * n ** (1 / 3)
    return float(min(max(block, 1.0), b_max))


def _flat_top(m: int) -> np.ndarray:
    """Return the flat-top lag window lambda(k / m) at lags 1..m: 1 up to m / 2, then linear
    down to 0 at m (Politis & Romano 1995)."""
    k = np.arange(1, m + 1)
    out: np.ndarray = np.where(k / m <= 0.5, 1.0, 2 * (1 - k / m))
    return out


def _prewhitened(r: np.ndarray) -> tuple[float, float] | None:
    """Return the long-run variance of `r` (n var(mean)) and the degrees of freedom of that
    estimate, or None for a series too short or without variance.

    Andrews & Monahan's (1992) prewhitening: an AR(1) fitted to the demeaned series (its
    coefficient phi cut to [-0.97, 0.97]) takes out the short-range dependence a few hundred
    returns cannot resolve lag by lag; the residuals' long-run variance is the flat-top lag-window
    estimate with the lags of `optimal_block` (Politis & White's M, chosen on the residuals),
    scaled by n / (n - 2M - 1) for the sample mean's bias; recoloured, LRV = LRV_u / (1 - phi)^2.
    Its degrees of freedom nu = 2 / var(log LRV) by the delta method, over the n - 1 residuals:
    2 (1 + 2 sum lambda^2) / (n - 1) from the lag window and 4 (1 + phi) / ((1 - phi) (n - 1))
    from phi.
    """
    n = r.size
    if n < 8:
        return None
    e = r - r.mean()
    lagged = float(e[:-1] @ e[:-1])
    if not lagged > _FLAT ** 2 * n:
        return None
    phi = min(max(float(e[1:] @ e[:-1]) / lagged, -0.97), 0.97)
    window = _window(e[1:] - phi * e[:-1])
    if window is None:
        return None
    acv, m = window
    lam = _flat_top(m)
    value = float(acv[0] + np.sum(2 * lam * acv[1:m + 1]))
    if not value > 0:
        return None
    lrv = value * n / (n - 2 * m - 1) / (1 - phi) ** 2
    var_log = (2 * (1 + 2 * float(np.sum(lam * lam))) / (n - 1)
               + 4 * (1 + phi) / ((1 - phi) * (n - 1)))
    return lrv, 2 / var_log


def long_run_variance(x: Sequence[float] | np.ndarray) -> float | None:
    """Return the prewhitened flat-top estimate of the long-run variance of `x` (n var(mean));
    see `_prewhitened`."""
    out = _prewhitened(_array(x))
    return None if out is None else out[0]


def t_quantile(p: float, df: float) -> float:
    """Return Student's t quantile at `p` with `df` (at least 4) degrees of freedom: the
    Cornish-Fisher expansion about the normal quantile (Abramowitz & Stegun 26.7.5): from 4
    degrees of freedom on, within 0.3 % of the exact value up to p = 0.975 and 1.3 % at 0.995."""
    z = NormalDist().inv_cdf(p)
    v = max(df, 4.0)
    return (z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * v ** 3))


def spread_factor(r: np.ndarray, resampled_means: np.ndarray, quantile: float = 0.975) -> float:
    """Return how much to widen resampled statistics about the estimate, at least 1:
    sqrt(long-run variance / (n x the bootstrap variance of the mean)) x t(quantile, nu) /
    z(quantile), nu being the long-run variance's degrees of freedom (`_prewhitened`), so an
    interval whose ends are at `quantile` has the width of the t interval, which allows for the
    variance being estimated."""
    est = _prewhitened(r)
    boot = float(np.var(resampled_means)) * r.size
    if est is None or not boot > 0:
        return 1.0
    lrv, df = est
    stretch = t_quantile(quantile, df) / NormalDist().inv_cdf(quantile)
    return max(1.0, math.sqrt(lrv / boot) * stretch)


def _window(r: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Return the autocovariances R(0..m_max) and the lag window M of Politis & White, or None
    for a series too short or without variance."""
    n = r.size
    if n < 8:
        return None
    eps = r - r.mean()
    kn = max(5, int(math.log10(n)))
    m_max = min(math.ceil(math.sqrt(n)) + kn, n - 2)
    cv = 2 * math.sqrt(math.log10(n) / n)
    full = np.correlate(eps, eps, mode="full")[n - 1:n + m_max] / n  # R(0..m_max)
    acv = full[:m_max + 1]
    if not acv[0] > _FLAT ** 2:
        return None
    rho = np.abs(acv[1:] / acv[0])  # rho[k-1] = |corr at lag k|
    m_hat = None
    for start in range(m_max - kn + 1):
        if np.all(rho[start:start + kn] < cv):
            m_hat = start  # the lags after m_hat are insignificant
            break
    m = m_max if m_hat is None else min(2 * max(m_hat, 1), m_max)
    return acv, m


def block_length(x: Sequence[float] | np.ndarray) -> int:
    """Return `optimal_block(x)` rounded up to whole cycles (shared resample matrices)."""
    return max(1, math.ceil(optimal_block(x) - 1e-9))


def _resample(n: int, n_boot: int, seed: int, block: float = 1.0) -> np.ndarray:
    """Return (n_boot, n) stationary-bootstrap indices: blocks of mean length `block`.

    Each position starts a new block with probability 1 / block (always at the first), at a
    uniform index; otherwise it takes the index after the previous one, wrapping to 0 after
    n - 1. A block of 1 is the i.i.d. bootstrap.
    """
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(n_boot, n))
    if block <= 1:
        return starts
    new = rng.random((n_boot, n)) < 1.0 / block
    new[:, 0] = True
    # On the flattened matrix (one pass each: numpy's accumulate along the rows of a matrix is
    # several times slower): every row begins a block, so no block spans two rows.
    pos = np.arange(n_boot * n)
    began = np.maximum.accumulate(pos * new.ravel())  # where each block began
    out = starts.ravel()[began]
    out += pos - began  # the step into the block: below n, so one wrap at most
    out[out >= n] -= n
    return out.reshape(n_boot, n)


@lru_cache(maxsize=4)
def _counts(n: int, n_boot: int, seed: int, block: int = 1) -> np.ndarray:
    """Return how often each observation is drawn in each resample (same draws as `_resample`).

    Cached: every series of one length and block length shares them, and a statistic that is a
    sum over draws becomes one matrix product instead of a gather of n_boot x n values. The
    traders of one refresh share a length (it grows by one each cycle, so older entries are never
    asked again) and most share a few small block lengths; 16 MB each at 2,016 returns;
    `release_resamples` drops them when a refresh is done.
    """
    rows = np.arange(n_boot, dtype=np.int64)[:, None] * n
    flat = (_resample(n, n_boot, seed, block) + rows).ravel()
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
                 level: float = 0.95, seed: int = 0,
                 block: int | None = None) -> tuple[float, float] | None:
    """Return the percentile stationary-bootstrap CI of `statistic`, None under 2 observations.

    `block` is the mean block length (default: `block_length` of the series).

    `statistic` takes a numpy array of returns; if it also maps a (n_boot, n) matrix to one value
    per row (along the last axis) it is called once, otherwise once per resample. Resamples where
    it is undefined (None or NaN) are left out; None when more than half are.
    """
    r = _array(returns)
    if r.size < 2 or n_boot < 1:
        return None
    b = block_length(r) if block is None else max(1, int(block))
    fast = getattr(statistic, "from_counts", None)
    if fast is not None:
        counts = _counts(r.size, n_boot, seed, b)
        values = np.asarray(fast(counts, r), dtype=float)
        means = counts @ r / r.size
    else:
        idx = _resample(r.size, n_boot, seed, b)
        values = _apply(statistic, r[idx])
        means = r[idx].mean(axis=1)
    factor = spread_factor(r, means, (1 + level) / 2)
    if factor > 1.0:
        center = np.asarray(_apply(statistic, r[None, :]), dtype=float)[0]
        if not math.isfinite(center):
            center = float(np.nanmedian(values))
        values = center + (values - center) * factor
    values = values[np.isfinite(values)]
    if values.size * 2 < n_boot:
        return None
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def prob_beats(returns_a: Sequence[float] | np.ndarray, returns_b: Sequence[float] | np.ndarray,
               *, n_boot: int = 2000, seed: int = 0, block: int | None = None) -> float | None:
    """Return P(A's total return > B's) by a paired stationary bootstrap over aligned returns.

    Both series are resampled with the same cycle indices, in blocks of mean length `block`
    (default: `block_length` of the per-cycle difference of their log growth); a tie counts one
    half, so two identical series give exactly 0.5. None with under 2 aligned returns or series
    of different lengths.
    """
    a, b = _array(returns_a), _array(returns_b)
    if a.size != b.size or a.size < 2 or n_boot < 1:
        return None
    # A's compounded return beats B's exactly when its log growth does
    d = _log_growth(a) - _log_growth(b)
    size = block_length(d) if block is None else max(1, int(block))
    diff = _counts(a.size, n_boot, seed, size) @ d
    observed = float(d.sum())
    # widened for the one-sided 95 % quantile: P >= 0.95 (the default beats_p) as often as it
    # should be under the null
    diff = observed + (diff - observed) * spread_factor(d, diff / d.size, 0.95)
    wins = np.count_nonzero(diff > 1e-12)
    ties = np.count_nonzero(np.abs(diff) <= 1e-12)
    return float((wins + 0.5 * ties) / n_boot)  # a plain float: JSON writes it as a number


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
