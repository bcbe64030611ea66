"""The stationary block bootstrap covers the truth: a simulation of 2,000 series of 288 returns.

Series are simulated here (numpy, fixed seeds): AR(1) with rho = 0.3 (returns that depend on the
previous cycle's, as a position held over several cycles makes them) and i.i.d. normal. Each goes
through the engine's own `bootstrap_ci` (its automatic block length, its resample matrices) for
the mean per-cycle return, whose true value is 0. Under the null of two traders with the same
return process, P(A beats B) must be uniform (Kolmogorov-Smirnov against U(0, 1)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.paper.stats import (
    block_length,
    bootstrap_ci,
    long_run_variance,
    mean_return,
    optimal_block,
    prob_beats,
    t_quantile,
)

SERIES, N, BOOT = 2000, 288, 999


def ar1(rng: np.random.Generator, rho: float, count: int, n: int) -> np.ndarray:
    """Return `count` stationary AR(1) series of length n with unit innovations."""
    e = rng.standard_normal((count, n))
    x = np.empty((count, n))
    x[:, 0] = e[:, 0] / math.sqrt(1 - rho * rho)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + e[:, t]
    return x


def coverage(series: np.ndarray) -> float:
    hits = 0
    for x in series:
        ci = bootstrap_ci(x, mean_return, n_boot=BOOT, level=0.95)
        assert ci is not None
        hits += ci[0] <= 0.0 <= ci[1]
    return hits / len(series)


def ks_uniform(values: np.ndarray) -> float:
    """Return the Kolmogorov-Smirnov distance between `values` and U(0, 1)."""
    v = np.sort(values)
    n = v.size
    upper = np.arange(1, n + 1) / n - v
    lower = v - np.arange(0, n) / n
    return float(max(upper.max(), lower.max()))


def test_ci_coverage_on_ar1_returns_with_rho_03_is_at_least_093():
    # the issue asks 0.92; 0.9375 to 0.958 measured on ten seeds (docs/leaderboard.md)
    assert coverage(ar1(np.random.default_rng(23), 0.3, SERIES, N)) >= 0.93


def test_ci_coverage_on_iid_returns_is_at_least_093_and_not_grossly_over():
    assert 0.93 <= coverage(np.random.default_rng(5).standard_normal((SERIES, N))) <= 0.975


def test_the_long_run_variance_of_ar1_returns_is_nearly_unbiased():
    # n var(mean) of an AR(1) with unit innovations, exactly at n = 288
    rho, k = 0.3, np.arange(1, N)
    truth = (1 + 2 * np.sum((1 - k / N) * rho ** k)) / (1 - rho * rho)
    estimates = [long_run_variance(x) for x in ar1(np.random.default_rng(8), rho, 500, N)]
    # measured +1.7 %; the lag window alone (mostly cut at lag 2 here) came out 9.9 % low
    assert abs(np.mean(estimates) / truth - 1) < 0.05


def test_t_quantiles_match_the_table():
    for p, df, exact in ((0.975, 4, 2.7764), (0.975, 10, 2.2281), (0.975, 30, 2.0423),
                         (0.95, 4, 2.1318), (0.95, 10, 1.8125)):
        assert abs(t_quantile(p, df) / exact - 1) < 0.003, (p, df)
    assert t_quantile(0.975, 1e9) == pytest.approx(1.95996, abs=1e-4)


def test_the_block_length_grows_with_dependence():
    rng = np.random.default_rng(3)
    iid = np.median([optimal_block(x) for x in rng.standard_normal((200, N))])
    dep = np.median([optimal_block(x) for x in ar1(rng, 0.3, 200, N)])
    strong = np.median([optimal_block(x) for x in ar1(rng, 0.7, 200, N)])
    assert iid < dep < strong
    assert block_length(np.zeros(N)) == 1  # no variance: nothing to keep together


def test_p_a_beats_b_is_uniform_under_the_null():
    rng = np.random.default_rng(41)
    a = ar1(rng, 0.3, SERIES, N) * 0.001
    b = ar1(rng, 0.3, SERIES, N) * 0.001
    p = np.array([prob_beats(x, y, n_boot=BOOT) for x, y in zip(a, b, strict=True)])
    # 1.63 / sqrt(n): the KS critical distance at the 1 % level
    assert ks_uniform(p) < 1.63 / math.sqrt(SERIES)
    assert 0.45 < p.mean() < 0.55
