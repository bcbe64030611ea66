"""The leaderboard: rows, Sharpe from the cycle equity series, the console table."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from engine.events import AccountSnapshot
from engine.paper.accounts import Account
from engine.paper.broker import PaperBroker
from engine.paper.leaderboard import (
    BoardStats,
    board_stats,
    render_table,
)
from engine.paper.stats import SECONDS_PER_YEAR, ReturnStats
from engine.settings import LeaderboardSettings
from tests.support.broker import FakeBook, broker_settings, build_rows, risk_settings


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
    # sorted by return; with no P(A beats B) yet, no one beats anyone: both rank 1
    assert [(r["rank"], r["trader"]) for r in rows] == [(1, "beta"), (1, "alpha")]
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


# ---------------------------------------------------------------- statistics on the board

BOARD = LeaderboardSettings(min_returns=20, bootstrap_samples=500, returns_kept=500)


def account_with_returns(name: str, returns: list[float], dt: float = 300.0) -> Account:
    acc = Account.new(name, 10_000, 0)
    equity = 10_000.0
    acc.state.returns.add(equity, 0.0)
    for i, r in enumerate(returns, 1):
        equity *= 1 + r
        acc.state.returns.add(equity, i * dt)
    acc.cash = equity
    return acc


def stats_of(accounts: list[Account], settings: LeaderboardSettings = BOARD) -> BoardStats:
    return board_stats({a.trader: tuple(a.state.returns.recent) for a in accounts},
                       {a.trader: a.state.returns.periods_per_year() for a in accounts},
                       settings)


def test_sharpe_and_sortino_show_only_from_the_minimum_number_of_returns() -> None:
    returns = [0.002, -0.001] * 10  # 20 returns
    short = account_with_returns("short", returns[:19])
    enough = account_with_returns("enough", returns)
    rows = {r["trader"]: r for r in build_rows([short, enough], {}, 0.0, min_returns=20)}
    assert rows["short"]["sharpe"] is None and rows["short"]["sortino"] is None
    assert rows["short"]["returns_n"] == 19
    ppy = SECONDS_PER_YEAR / 300
    # mean 0.0005, sample std 0.0015·√(20/19), downside √(0.000001/2)
    expected_sharpe = 0.0005 / (0.0015 * math.sqrt(20 / 19)) * math.sqrt(ppy)
    assert rows["enough"]["sharpe"] == pytest.approx(expected_sharpe, abs=0.01)
    assert rows["enough"]["sortino"] == pytest.approx(
        0.0005 / math.sqrt(0.000001 / 2) * math.sqrt(ppy), abs=0.01)
    assert render_table(tuple(rows.values())).count(" - ") >= 2


def test_a_refresh_keeps_no_resample_matrix_once_done() -> None:
    from engine.paper.stats import _counts

    rng = np.random.default_rng(5)
    accounts = [account_with_returns(n, list(rng.normal(0.0, 0.004, 300))) for n in "ab"]
    first = stats_of(accounts)
    assert _counts.cache_info().currsize == 0  # up to 16 MB each, never asked for again
    assert stats_of(accounts) == first  # and the figures are the same when drawn again


def test_board_stats_give_cis_that_cover_the_point_estimates() -> None:
    rng = np.random.default_rng(11)
    acc = account_with_returns("a", list(rng.normal(0.001, 0.004, 200)))
    stats = stats_of([acc])
    (row_,) = build_rows([acc], {}, 0.0, min_returns=20, stats=stats)
    lo, hi = row_["return_ci"]
    assert lo < row_["return_pct"] < hi  # % of capital, the kept series is the whole history
    slo, shi = row_["sharpe_ci"]
    assert slo < row_["sharpe"] < shi
    assert 0.0 <= row_["deflated_sharpe"] <= 1.0
    assert stats.info["periods_per_year"] == pytest.approx(SECONDS_PER_YEAR / 300, rel=1e-3)
    assert stats.info["min_returns"] == 20 and stats.info["ci_level"] == 0.95


def test_board_stats_need_the_minimum_number_of_returns() -> None:
    acc = account_with_returns("a", [0.001, -0.002, 0.003] * 6)  # 18 < 20
    (row_,) = build_rows([acc], {}, 0.0, min_returns=20, stats=stats_of([acc]))
    assert (row_["return_ci"], row_["sharpe_ci"], row_["deflated_sharpe"]) == (None, None, None)


def test_pairwise_identical_traders_are_a_coin_toss_and_a_dominated_one_always_loses() -> None:
    rng = np.random.default_rng(5)
    base = list(rng.normal(0.0, 0.003, 60))
    a = account_with_returns("a", base)
    twin = account_with_returns("twin", base)
    better = account_with_returns("better", [r + 0.001 for r in base])
    pairs = {(p["a"], p["b"]): p for p in stats_of([a, twin, better]).pairwise}
    assert pairs[("a", "twin")]["p_a_beats_b"] == 0.5
    assert pairs[("a", "better")]["p_a_beats_b"] == 0.0
    assert pairs[("a", "better")]["n"] == 60


def test_pairs_are_compared_only_over_the_cycles_both_were_in() -> None:
    rng = np.random.default_rng(6)
    early = account_with_returns("early", list(rng.normal(0.0, 0.003, 50)))
    late = Account.new("late", 10_000, 0)
    late.state.returns.add(10_000, 25 * 300.0)  # joined at the 25th cycle
    for i in range(26, 51):
        late.state.returns.add(10_000 + i, i * 300.0)
    (pair,) = stats_of([early, late]).pairwise
    assert pair["n"] == 25


def test_pairs_are_oriented_by_rank_on_the_board() -> None:
    base = [0.001, -0.0005] * 15
    low = account_with_returns("alpha", base)
    high = account_with_returns("omega", [r + 0.002 for r in base])
    stats = stats_of([low, high])
    rows = build_rows([low, high], {}, 0.0, min_returns=20, stats=stats)
    assert [r["trader"] for r in rows] == ["omega", "alpha"]
    (pair,) = stats.ranked_pairs([r["trader"] for r in rows])
    assert (pair["a"], pair["b"], pair["p_a_beats_b"]) == ("omega", "alpha", 1.0)


def test_console_table_shows_cis_the_annualization_and_the_pairs() -> None:
    base = [0.001, -0.0005] * 15
    accs = [account_with_returns("alpha", base),
            account_with_returns("omega", [r + 0.002 for r in base])]
    stats = stats_of(accs)
    rows = build_rows(accs, {}, 0.0, min_returns=20, stats=stats)
    text = render_table(rows, info=stats.info,
                        pairwise=stats.ranked_pairs([r["trader"] for r in rows]))
    header = text.splitlines()[0].split()
    assert {"ret95%", "sharpe", "sharpe95%", "sortino"} <= set(header)
    lo, hi = rows[0]["sharpe_ci"]
    assert f"[{lo:+.2f},{hi:+.2f}]" in text
    assert "x sqrt(105,120) (a cycle every 300 s, 365-day year)" in text
    assert "omega > alpha: 1.00 (30 cycles)" in text


def test_the_series_is_bounded_and_rebuilt_from_the_cycle_snapshots(clock, bus) -> None:
    board = LeaderboardSettings(returns_kept=10)
    published = bus.subscribe("test", [AccountSnapshot])
    broker = PaperBroker(broker_settings(), risk_settings(), bus, clock, FakeBook(),
                         board=board)
    broker.open_account("a", 10_000.0)
    acc = broker.accounts["a"]
    for i in range(15):
        acc.cash += 10.0 * (-1) ** i
        broker.publish_snapshots("cycle", f"c{i}")
        broker.publish_snapshots("timer", None)  # the minute snapshots carry no return
        clock.set_time(clock.time() + 300)
    assert len(acc.state.returns.recent) == 10 and acc.state.returns.n == 14
    snap = broker.snapshot("a", "timer", None)
    assert "recent" not in snap.state["returns"]  # the series is not in the snapshot rows
    points = [(s.ts, s.equity) for s in published.drain() if s.cause == "cycle"]
    series = ReturnStats.series_from_equity(points, board.returns_kept)
    again = PaperBroker(broker_settings(), risk_settings(), bus, clock, FakeBook(), board=board)
    again.restore("a", {"cash": snap.cash, "realized_pnl": snap.realized_pnl, "fees": snap.fees,
                        "funding": snap.funding, "positions": list(snap.positions),
                        "state": snap.state, "returns_series": series})
    assert list(again.accounts["a"].state.returns.recent) == list(acc.state.returns.recent)
    assert again.accounts["a"].state.returns == acc.state.returns


async def test_the_cycle_computes_the_board_statistics_off_the_loop(clock, bus) -> None:
    broker = PaperBroker(broker_settings(), risk_settings(), bus, clock, FakeBook(), board=BOARD)
    rng = np.random.default_rng(9)
    for name in ("a", "b"):
        broker.accounts[name] = account_with_returns(name, list(rng.normal(0, 0.003, 40)))
    await broker.refresh_board_stats()
    board = broker.leaderboard("c1", publish=False)
    assert all(r["sharpe_ci"] is not None for r in board.rows)
    assert len(board.pairwise) == 1 and board.stats["bootstrap_samples"] == 500


def test_console_table_says_why_its_statistics_are_withheld() -> None:
    returns = [0.002, -0.001] * 10
    accs = [account_with_returns("short", returns[:18]), account_with_returns("long", returns)]
    stats = stats_of(accs, LeaderboardSettings(min_returns=30))
    rows = build_rows(accs, {}, 0.0, min_returns=30, stats=stats)
    text = render_table(rows, info=stats.info)
    assert text.splitlines()[-1] == "-: withheld, needs 30 returns, has 18"
    enough = build_rows(accs, {}, 0.0, min_returns=10, stats=stats_of(
        accs, LeaderboardSettings(min_returns=10)))
    assert "withheld" not in render_table(enough, info=stats_of(
        accs, LeaderboardSettings(min_returns=10)).info)
