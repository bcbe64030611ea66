"""Return statistics on series whose answers are known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from engine.paper.stats import (
    ReturnStats,
    bootstrap_ci,
    deflated_sharpe,
    expected_max_sharpe,
    prob_beats,
    sharpe,
    sharpe_statistic,
    sortino,
    total_return,
)


def test_sharpe_of_a_two_point_series_is_known() -> None:
    # mean 0.01, population std 0.01, sample std 0.01·√(10/9): Sharpe √0.9 per period
    assert sharpe([0.02, 0.0] * 5, 1) == pytest.approx(math.sqrt(0.9))
    assert sharpe([0.02, 0.0] * 5, 365) == pytest.approx(math.sqrt(0.9) * math.sqrt(365))


def test_sortino_uses_the_downside_deviation_with_target_zero() -> None:
    # mean 0.005; downside deviation √(mean of 0, 0.0001) = √0.00005: Sortino 1/√2
    assert sortino([0.02, -0.01] * 5, 1) == pytest.approx(1 / math.sqrt(2))


def test_ratios_are_undefined_without_variance_or_data() -> None:
    assert sharpe([0.001] * 30, 365) is None
    assert sharpe([0.01], 365) is None
    assert sortino([0.001, 0.002, 0.0], 365) is None  # never below zero
    assert sortino([], 365) is None


def test_bootstrap_ci_of_constant_returns_is_the_exact_total_return() -> None:
    lo, hi = bootstrap_ci([0.001] * 50, total_return)
    assert lo == pytest.approx(1.001 ** 50 - 1) and hi == pytest.approx(1.001 ** 50 - 1)


def test_bootstrap_ci_covers_the_true_sharpe_with_its_textbook_width() -> None:
    rng = np.random.default_rng(7)
    returns = rng.normal(0.1, 1.0, 4000)  # true Sharpe 0.1 per period
    lo, hi = bootstrap_ci(returns, sharpe_statistic(1))
    assert lo < 0.1 < hi
    # Lo (2002): the Sharpe estimate's standard error is √((1 + SR²/2) / n)
    expected_width = 2 * 1.96 * math.sqrt((1 + 0.1 ** 2 / 2) / 4000)
    assert hi - lo == pytest.approx(expected_width, rel=0.15)


def test_bootstrap_ci_accepts_a_scalar_statistic_and_is_reproducible() -> None:
    returns = [0.01, -0.02, 0.015, 0.0, 0.005, -0.01, 0.02]
    ci = bootstrap_ci(returns, np.median, n_boot=500, seed=3)
    assert ci is not None and ci == bootstrap_ci(returns, np.median, n_boot=500, seed=3)
    assert min(returns) <= ci[0] <= ci[1] <= max(returns)


def test_bootstrap_ci_needs_observations_and_a_defined_statistic() -> None:
    assert bootstrap_ci([0.01], total_return) is None
    assert bootstrap_ci([0.001] * 20, sharpe_statistic(1)) is None  # no variance in any resample


def test_identical_series_beat_each_other_half_the_time() -> None:
    series = list(np.random.default_rng(1).normal(0, 0.01, 200))
    assert prob_beats(series, series) == 0.5


def test_a_dominated_series_loses_every_resample() -> None:
    b = np.random.default_rng(2).normal(0, 0.01, 100)
    assert prob_beats(b + 0.001, b) == 1.0
    assert prob_beats(b, b + 0.001) == 0.0


def test_prob_beats_is_symmetric_and_tracks_the_edge() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.002, 0.01, 300), rng.normal(0.0, 0.01, 300)
    p = prob_beats(a, b)
    assert p is not None and p + prob_beats(b, a) == pytest.approx(1.0)
    assert 0.8 < p < 1.0


def test_prob_beats_needs_aligned_series() -> None:
    assert prob_beats([0.01, 0.02], [0.01]) is None
    assert prob_beats([0.01], [0.02]) is None


def test_deflated_sharpe_matches_bailey_and_lopez_de_prado_worked_example() -> None:
    # The Deflated Sharpe Ratio (2014), numerical example: 100 trials, annualized Sharpe 2.5 over
    # 5 years of daily returns (T = 1250), variance of the trials' annualized Sharpe 1/2,
    # skewness -3, kurtosis 10: SR0 ≈ 0.1132 (daily) and DSR ≈ 0.9004.
    daily_variance = 0.5 / 250
    assert expected_max_sharpe(100, daily_variance) == pytest.approx(0.1132, abs=1e-4)
    dsr = deflated_sharpe(2.5 / math.sqrt(250), 1250, 100, -3, 10, daily_variance)
    assert dsr == pytest.approx(0.9004, abs=1e-4)


def test_deflated_sharpe_of_one_trial_is_the_probabilistic_sharpe_against_zero() -> None:
    # normal returns (skew 0, kurtosis 3), SR 0: exactly a coin toss
    assert deflated_sharpe(0.0, 100, 1, 0.0, 3.0, 0.01) == pytest.approx(0.5)
    assert deflated_sharpe(0.2, 400, 1, 0.0, 3.0, 0.01) > 0.99


def test_running_stats_agree_with_the_pure_functions_on_the_kept_series() -> None:
    equities = [10_000, 10_100, 10_050, 10_200, 10_180, 10_300, 10_150]
    stats = ReturnStats(window=4)
    for i, e in enumerate(equities):
        stats.add(e, i * 300.0)
    returns = np.array([b / a - 1 for a, b in itertools.pairwise(equities)])
    ppy = 365 * 86_400 / 300
    assert stats.sharpe() == pytest.approx(sharpe(returns, ppy))
    assert stats.sortino() == pytest.approx(sortino(returns, ppy))
    assert stats.sharpe(min_obs=7) is None and stats.sortino(min_obs=7) is None
    assert list(stats.series()) == pytest.approx(list(returns[-4:]))  # only the window is kept


def test_running_stats_survive_a_round_trip_without_their_series() -> None:
    stats = ReturnStats(window=10)
    for i, e in enumerate([100.0, 101.0, 99.0, 102.0]):
        stats.add(e, i * 60.0)
    data = stats.to_dict()
    assert "recent" not in data  # the series is rebuilt from the cycle snapshots, not stored
    back = ReturnStats.from_dict(data)
    assert len(back.recent) == 0
    back.restore_series(stats.recent)
    assert back == stats
    old = ReturnStats.from_dict({"n": 3, "mean": 0.01, "m2": 0.001, "last_equity": 1.0,
                                 "last_ts": 5.0, "dt_sum": 15.0})
    assert old.n == 3 and len(old.recent) == 0  # a snapshot from before the series was kept


def test_a_series_stored_by_an_older_version_is_still_read() -> None:
    stored = {"n": 3, "mean": 0.0, "m2": 0.0, "down2": 0.0, "last_equity": 99.0,
              "last_ts": 120.5, "dt_sum": 120.0, "window": 10,
              "recent": {"t": [60.25, 30.0, 30.25], "r": [0.01, -0.02, 0.005]}}
    assert list(ReturnStats.from_dict(stored).recent) == [
        (60.25, 0.01), (90.25, -0.02), (120.5, 0.005)]
    first = {**stored, "recent": [[60.25, 0.01], [90.25, -0.02]]}  # the very first layout
    assert list(ReturnStats.from_dict(first).recent) == [(60.25, 0.01), (90.25, -0.02)]


# (ts, equity) of cycle snapshots: a second snapshot at one instant (t=600) is not a new period,
# an account at zero equity makes no return from it
POINTS = [(0.0, 10_000.0), (300.0, 10_100.0), (600.0, 10_050.0), (600.0, 9_000.0),
          (900.0, 10_200.0), (1_200.0, 0.0), (1_500.0, 500.0), (1_800.0, 520.0),
          (2_100.0, 530.125), (2_400.0, 529.0)]


def test_the_series_rebuilt_from_equity_points_is_the_one_add_kept() -> None:
    for kept in (1, 3, 6, 100):
        stats = ReturnStats(window=kept)
        for ts, equity in POINTS:
            stats.add(equity, ts)
        assert ReturnStats.series_from_equity(POINTS, kept) == list(stats.recent)
    assert [ts for ts, _ in ReturnStats.series_from_equity(POINTS, 100)] == [
        300.0, 600.0, 900.0, 1_200.0, 1_800.0, 2_100.0, 2_400.0]


def test_the_newest_points_give_the_newest_returns_but_for_the_first() -> None:
    # from the second snapshot at t=600 on, five returns: the first (t=900 over the skipped
    # 9,000 instead of 10,050) is off, the four after it are exact; recovery asks for one more
    # than it keeps and drops it
    partial = ReturnStats.series_from_equity(POINTS[3:], 5)
    assert partial[0] == (900.0, pytest.approx(10_200 / 9_000 - 1, rel=1e-9))
    assert ReturnStats.series_from_equity(POINTS, 100)[2] == (
        900.0, pytest.approx(10_200 / 10_050 - 1, rel=1e-9))
    assert partial[1:] == ReturnStats.series_from_equity(POINTS, 4)


def test_the_counting_fast_path_draws_the_same_resamples_as_the_generic_one() -> None:
    r = np.random.default_rng(4).normal(0.0005, 0.01, 300)
    generic_total = bootstrap_ci(r, lambda a: np.prod(1 + a, axis=-1) - 1, n_boot=400, seed=9)
    assert bootstrap_ci(r, total_return, n_boot=400, seed=9) == pytest.approx(generic_total)
    generic_sharpe = bootstrap_ci(
        r, lambda a: np.mean(a, axis=-1) / np.std(a, axis=-1, ddof=1) * math.sqrt(365),
        n_boot=400, seed=9)
    assert bootstrap_ci(r, sharpe_statistic(365), n_boot=400, seed=9) == pytest.approx(
        generic_sharpe)
