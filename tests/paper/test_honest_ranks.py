"""Honest ranks: 1 + the traders that beat it with P >= 0.95, ties shared, everyone 1 while P is
withheld; coverage on every row, below leaderboard.min_coverage ranked apart; P(beats random)."""

from __future__ import annotations

from engine.paper.accounts import Account
from engine.paper.leaderboard import UNRANKED, BoardStats, render_table
from tests.support.broker import build_rows


def account(name: str, equity: float, *, decisions: int = 100, invalid: int = 0,
            skipped: int = 0) -> Account:
    a = Account.new(name, 10_000, 0)
    a.cash = equity
    a.state.decisions, a.state.invalid, a.state.skipped = decisions, invalid, skipped
    return a


def stats(*pairs: tuple[str, str, float | None]) -> BoardStats:
    return BoardStats(pairwise=tuple({"a": a, "b": b, "p_a_beats_b": p, "n": 288}
                                     for a, b, p in pairs),
                      info={"min_coverage": 0.95, "beats_p": 0.95})


ACCOUNTS = [account("ema", 10_900), account("claude", 10_500), account("gpt", 10_200),
            account("random", 9_900)]


def ranks(rows) -> list[tuple[str, int | None]]:
    return [(r["trader"], r["rank"]) for r in rows]


def test_everyone_ranks_first_while_every_probability_is_withheld():
    board = stats(("claude", "ema", None), ("claude", "gpt", None), ("ema", "gpt", None))
    rows = build_rows(ACCOUNTS, {}, 0.0, stats=board)
    assert ranks(rows) == [("ema", 1), ("claude", 1), ("gpt", 1), ("random", 1)]


def test_rank_is_one_plus_the_traders_that_beat_it_with_p_at_least_095():
    board = stats(("claude", "ema", 0.40), ("ema", "gpt", 0.97), ("claude", "gpt", 0.95),
                  ("ema", "random", 0.99), ("claude", "random", 0.96),
                  ("gpt", "random", 0.60))
    rows = build_rows(ACCOUNTS, {}, 0.0, stats=board, null="random")
    # ema and claude: no one beats them (0.40 / 0.60 either way): both 1, a shared rank.
    # gpt: beaten by ema (0.97) and claude (0.95): 3. random: beaten by ema and claude: 3.
    assert ranks(rows) == [("ema", 1), ("claude", 1), ("gpt", 3), ("random", 3)]
    assert [r["p_beats_random"] for r in rows] == [0.99, 0.96, 0.6, None]


def test_a_probability_of_a_beating_b_counts_for_b_beating_a_as_its_complement():
    board = stats(("claude", "ema", 0.02))  # ema beats claude with 0.98
    rows = build_rows(ACCOUNTS[:2], {}, 0.0, stats=board)
    assert ranks(rows) == [("ema", 1), ("claude", 2)]


def test_coverage_counts_invalid_and_skipped_cycles_against_the_trader():
    accounts = [account("a", 10_000, decisions=90, invalid=5, skipped=10),
                account("b", 10_000, decisions=0), account("c", 10_000, decisions=10)]
    rows = {r["trader"]: r for r in build_rows(accounts, {}, 0.0, min_coverage=0.95)}
    assert rows["a"]["coverage"] == 0.85  # (90 - 5) / (90 + 10)
    assert rows["b"]["coverage"] is None and rows["b"]["ranked"]  # no cycle yet: not judged
    assert rows["c"]["coverage"] == 1.0


def test_a_trader_below_min_coverage_is_ranked_apart_after_the_ranked_rows():
    flaky = account("flaky", 12_000, decisions=80, invalid=20)  # best return, coverage 0.75
    board = stats(("flaky", "ema", 0.999), ("claude", "flaky", 0.001))
    rows = build_rows([flaky, *ACCOUNTS[:2]], {}, 0.0, stats=board, min_coverage=0.95)
    assert ranks(rows) == [("ema", 1), ("claude", 1), ("flaky", None)]  # it beats no one
    assert rows[-1]["coverage"] == 0.75 and rows[-1]["ranked"] is False
    table = render_table(rows, info=board.info)
    lines = table.splitlines()
    assert lines[4].split()[0:2] == [UNRANKED, "flaky"]
    assert (f"{UNRANKED}: ranked apart, coverage (cycles with a valid decision of its own) "
            "below 95%") in table
    assert lines[0].split()[0] == "#" and "cover%" in lines[0] and "P>rand" in lines[0]
