"""The leaderboard: rows, Sharpe from the cycle equity series, the console table."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from engine.paper.accounts import Account
from engine.paper.leaderboard import build_rows, render_table
from engine.paper.stats import SECONDS_PER_YEAR, ReturnStats


def test_sharpe_matches_the_textbook_formula_on_the_series() -> None:
    equities = [10_000, 10_100, 10_050, 10_200, 10_180, 10_300]
    stats = ReturnStats()
    for i, e in enumerate(equities):
        stats.add(e, i * 300.0)  # one cycle every 5 minutes
    returns = [b / a - 1 for a, b in itertools.pairwise(equities)]
    expected = (statistics.mean(returns) / statistics.stdev(returns)
                * math.sqrt(SECONDS_PER_YEAR / 300))
    assert stats.sharpe() == pytest.approx(expected)


def test_sharpe_is_none_without_enough_points_or_variance() -> None:
    stats = ReturnStats()
    stats.add(10_000, 0)
    stats.add(10_100, 300)
    assert stats.sharpe() is None  # one return
    flat = ReturnStats()
    for i in range(5):
        flat.add(10_000, i * 300.0)
    assert flat.sharpe() is None


def test_a_second_point_at_the_same_instant_is_not_a_new_period() -> None:
    stats = ReturnStats()
    stats.add(10_000, 0)
    stats.add(10_500, 0)
    assert stats.n == 0


def test_rows_rank_by_return_and_compute_rates() -> None:
    a, b = Account.new("alpha", 10_000, 0), Account.new("beta", 10_000, 0)
    b.cash = 10_500.0
    b.realized_pnl = 500.0
    a.state.decisions, a.state.invalid, a.state.holds, a.state.llm_cost = 4, 1, 3, 2.0
    b.state.trades, b.state.wins = 4, 3
    rows = build_rows([a, b], {}, 0.0)
    assert [(r["rank"], r["trader"]) for r in rows] == [(1, "beta"), (2, "alpha")]
    beta, alpha = rows
    assert beta["return_pct"] == 5.0 and beta["win_rate"] == 75.0
    assert alpha["invalid_rate"] == 25.0 and alpha["hold_rate"] == 75.0
    assert alpha["net_return_pct"] == -0.02  # 2 USD of LLM on 10,000
    assert alpha["win_rate"] is None and alpha["status"] == "active"


def test_status_shows_suspension_and_stop() -> None:
    a, b = Account.new("a", 10_000, 0), Account.new("b", 10_000, 0)
    a.state.suspended_until = 100.0
    b.state.stopped = True
    rows = {r["trader"]: r["status"] for r in build_rows([a, b], {}, 50.0)}
    assert rows == {"a": "suspended", "b": "stopped"}


def test_console_table_has_a_header_and_one_line_per_trader() -> None:
    a = Account.new("claude", 10_000, 0)
    rows = build_rows([a, Account.new("gpt-4o", 10_000, 0)], {}, 0.0)
    lines = render_table(rows).splitlines()
    assert lines[0].split()[:4] == ["#", "trader", "equity", "ret%"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split()[:3] == ["1", "claude", "10,000.00"]
    assert len(lines) == 4
    assert " - " in lines[2]  # missing figures (no trades: win rate) show as "-"
