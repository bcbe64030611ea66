"""A run's figures from hand-made rows: every definition the README states, on known numbers."""

from __future__ import annotations

import uuid

import pytest

from engine.report.data import RunRows
from engine.report.figures import compute
from engine.report.intervals import annotate
from engine.report.render import html, markdown

T0 = 1_767_225_600.0


def _id() -> uuid.UUID:
    return uuid.uuid4()


def snap(trader: str, equity: float, ts: float, *, cause: str = "cycle", dd: float = 0.0,
         latency: float = 0.0) -> dict:
    return {"id": _id(), "trader": trader, "equity": equity, "drawdown_pct": dd,
            "return_pct": 0.0, "cause": cause, "capital": 10_000.0, "latency_cost": latency,
            "ts": ts}


def decision(trader: str, actions: list[str], *, valid: bool = True, tokens: int = 0,
             cost: float = 0.0, provider: str = "anthropic") -> dict:
    return {"id": _id(), "cycle_id": "c", "trader": trader, "provider": provider,
            "model": "claude-sonnet-4-6", "decision": {"actions": [{"action": a} for a in actions]},
            "valid": valid, "error": None, "input_tokens": tokens, "output_tokens": 10,
            "cache_read_tokens": 5, "cache_write_tokens": 0, "cost_usd": cost, "latency_ms": 1.0,
            "ts": T0}


def closed(trader: str, symbol: str, pnl: float, fees: float, opened: float, ts: float) -> dict:
    return {"id": _id(), "event": "close", "trader": trader, "symbol": symbol, "side": "long",
            "qty": 1.0, "entry_price": 1.0, "exit_price": 1.0, "realized_pnl": pnl, "fees": fees,
            "reason": "decision", "opened_at": opened, "ts": ts}


def rows() -> RunRows:
    run = {"id": _id(), "run_id": _id(), "started_at": T0, "version": "0.1.0",
           "settings_hash": "abc", "fresh": True, "dry_run": False, "mode": "replay",
           "source": "f00"}
    r = RunRows(run=run, next_run_id=None)
    r.snapshots = [snap("a", 10_000.0, T0, cause="start"), snap("a", 10_000.0, T0 + 300),
                   snap("a", 10_100.0, T0 + 600, dd=0.5, latency=1.0),
                   snap("a", 10_200.0, T0 + 900, dd=2.5, latency=3.5),
                   snap("b", 10_000.0, T0, cause="start"), snap("b", 9_900.0, T0 + 300),
                   snap("b", 9_950.0, T0 + 600), snap("b", 9_800.0, T0 + 900, dd=2.0)]
    r.positions = [closed("a", "BTCUSDT", 50.0, 2.0, T0, T0 + 600),  # net 48 - funding 10 = 38
                   closed("a", "ETHUSDT", -20.0, 1.0, T0 + 100, T0 + 400),  # net -21
                   closed("a", "BTCUSDT", 5.0, 1.0, T0 + 700, T0 + 800)]  # 4, after funding
    r.funding = [{"id": _id(), "trader": "a", "symbol": "BTCUSDT", "amount": 10.0,
                  "ts": T0 + 300},
                 {"id": _id(), "trader": "a", "symbol": "ETHUSDT", "amount": -1.5, "ts": T0 + 500}]
    r.fills = [{"id": _id(), "trader": "a", "fee": 1.25, "reason": "decision"},
               {"id": _id(), "trader": "a", "fee": 2.75, "reason": "decision"}]
    r.decisions = [decision("a", ["open_long"], tokens=100, cost=0.01),
                   decision("a", ["hold"], tokens=100, cost=0.01),
                   decision("a", [], valid=False, tokens=0, cost=0.0),
                   decision("b", ["hold", "hold"], provider="rule")]
    r.cycles = [{"id": _id(), "cycle_id": f"c{i}", "status": "ok", "started_at": T0 + 300 * i,
                 "finished_at": T0 + 300 * i + 1, "summary": {"cooldown": ["a"] if i == 3 else []}}
                for i in range(1, 4)]
    r.cache_hits = [{"id": _id(), "trader": "a", "saved_usd": 0.012, "ts": T0 + 300},
                    {"id": _id(), "trader": "a", "saved_usd": 0.008, "ts": T0 + 600}]
    r.rejections = [{"id": _id(), "trader": "a", "rule": rule, "ts": T0}
                    for rule in ("exposure_cap", "min_notional", "exposure_cap", "price_stale",
                                 "stop_too_close", "min_notional", "exposure_cap")]
    return r


def test_figures_follow_the_stated_definitions() -> None:
    f = compute(rows())
    a, b = f.traders  # best return first
    assert (a.trader, b.trader) == ("a", "b")
    assert a.return_pct == pytest.approx(2.0) and b.return_pct == pytest.approx(-2.0)
    assert a.max_drawdown_pct == 2.5 and a.latency_cost == 3.5
    assert (a.trades, a.wins) == (3, 2) and a.win_rate_pct == pytest.approx(200 / 3)
    assert a.biggest_win == 38.0 and a.biggest_loss == -21.0  # funding 10 paid while open
    assert a.avg_holding_s == pytest.approx((600 + 300 + 100) / 3)
    assert (a.fills, a.fees, a.funding) == (2, 4.0, 8.5)
    assert a.decisions == 3 and a.tokens == 100 + 10 + 5 + 100 + 10 + 5 + 10 + 5
    assert a.llm_cost_usd == pytest.approx(0.02) and a.model == "claude-sonnet-4-6"
    assert a.invalid_pct == pytest.approx(100 / 3)
    assert a.hold_pct == pytest.approx(200 / 3)  # the hold and the invalid (empty) answer
    assert a.cooldown_pct == pytest.approx(25.0)  # 1 of 4 turns
    assert a.top_rules == [("exposure_cap", 3), ("min_notional", 2), ("price_stale", 1)]
    assert a.cache_hits == 2 and a.cache_saved_usd == pytest.approx(0.02) and b.cache_hits == 0
    assert b.model == "rule-based" and b.hold_pct == 100.0 and b.trades == 0
    assert b.biggest_win is None and b.win_rate_pct is None
    assert f.duration_s == 901.0 and (f.cycles, f.cycles_ok) == (3, 3)
    assert [r for _, r in a.cycle_returns] == pytest.approx([0.01, 10_200 / 10_100 - 1])


def test_a_second_cycle_snapshot_of_one_instant_is_skipped_as_the_leaderboard_skips_it() -> None:
    from engine.paper.stats import ReturnStats

    r = rows()
    r.snapshots.insert(3, snap("a", 10_150.0, T0 + 600))  # made after the first one of T0+600
    a = next(t for t in compute(r).traders if t.trader == "a")
    assert [x for _, x in a.cycle_returns] == pytest.approx([0.01, 10_200 / 10_100 - 1])
    points = [(s["ts"], s["equity"]) for s in r.snapshots if s["trader"] == "a"
              and s["cause"] == "cycle"]
    board = ReturnStats.series_from_equity(points, kept=100)
    assert [x for _, x in board] == pytest.approx([x for _, x in a.cycle_returns])


def test_intervals_and_both_renderings() -> None:
    f = compute(rows())
    annotate(f, min_coverage=0.0)  # a decided validly on 2 of its 4 cycles: ranked here
    a, b = f.traders
    assert a.coverage == 0.5 and (a.stats["rank"], b.stats["rank"]) == (1, 2)  # P = 1.0
    lo, hi = a.stats["return_ci"]
    assert lo <= hi and a.stats["n_returns"] == 2
    assert 0.0 <= a.stats["p_beats_next"] <= 1.0 and "p_beats_next" not in b.stats
    assert a.stats["deflated_sharpe"] is None or 0.0 <= a.stats["deflated_sharpe"] <= 1.0
    md, page = markdown(f), html(f)
    assert "| 1 | a | claude-sonnet-4-6 | 50 | 10,200.00 | +2.000 |" in md
    assert "exposure_cap x3, min_notional x2, price_stale x1" in md
    assert "| a | 3 | 245 | 0.0200 | 2 | 0.0200 | 33.3 | 66.7 | 25.0 |" in md
    assert "**mode**: replay" in md and "**duration**: 0h15m01s" in md
    assert page.count("<polyline") == 2 and "<script" not in page


def test_too_few_returns_give_no_sharpe_and_no_interval() -> None:
    f = compute(rows())
    annotate(f, min_returns=30)  # two returns per trader: below leaderboard.min_returns
    b, a = f.traders  # a's coverage (0.5) is below the default 0.95: ranked apart, listed last
    why = "needs 30 returns, has 2"
    assert a.stats == {"n_returns": 2, "rank": None, "p_beats_random": None, "withheld": why}
    assert b.stats == {"n_returns": 2, "rank": 1, "p_beats_random": None, "p_beats_next": None,
                       "withheld": why}
    md = markdown(f)
    # each withheld figure says why instead of a bare "-"
    assert (f"| \u2013 | a | claude-sonnet-4-6 | 50 | 10,200.00 | +2.000 | {why} |" in md)
    board = md.split("## Leaderboard")[1].split("## Trading")[0]
    assert board.count(why) == 2 * 7 - 1  # 7 statistics each; the last has no P(beats next)


def test_two_runs_of_one_window_30_s_apart_write_separate_files(tmp_path) -> None:
    from engine.report.files import save

    paths = []
    for ms in (1_790_000_000_000, 1_790_000_030_000):  # 30 s apart: ids share 8 digits
        t = f"{ms:012x}"  # a UUIDv7 starts with its 48-bit millisecond timestamp
        r = rows()
        r.run["run_id"] = uuid.UUID(f"{t[:8]}-{t[8:]}-7000-8000-000000000000")
        paths.append(save(compute(r), tmp_path).markdown)
    assert paths[0] != paths[1] and len(list(tmp_path.iterdir())) == 6  # md, html, json each
    assert paths[0].name.startswith("run-20260101T000000Z-")


def test_the_return_is_against_the_starting_capital_as_on_the_console() -> None:
    r = rows()
    # a resumed arena: this run's first snapshot is not where the trader started
    r.snapshots = [snap("a", 10_500.0, T0, cause="start"), snap("a", 10_200.0, T0 + 300)]
    a = next(t for t in compute(r).traders if t.trader == "a")
    assert a.start_equity == 10_500.0 and a.capital == 10_000.0
    assert a.return_pct == pytest.approx(2.0)  # not (10,200 - 10,500) / 10,500


def test_the_json_report_writes_probabilities_as_numbers() -> None:
    import json

    import numpy as np

    from engine.report.files import as_json

    f = compute(rows())
    annotate(f, min_coverage=0.0)
    f.traders[0].stats["numpy_value"] = np.float64(0.575)  # as numpy code may hand it over
    data = json.loads(as_json(f))
    first = data["traders"][0]["stats"]
    assert isinstance(first["p_beats_next"], float) and first["numpy_value"] == 0.575
    assert isinstance(data["traders"][0]["coverage"], float)


def test_p_beats_random_is_against_the_trader_of_strategy_random_whatever_its_name() -> None:
    from engine.paper.stats import prob_beats
    from engine.report.figures import null_trader

    r = rows()
    # "coin" and "die" trade at random (their decision rows name the rule strategy); "random"
    # is an LLM trader that only carries the name
    for name, path in (("coin", (9_950.0, 10_000.0, 9_900.0)), ("die", (10_050.0, 9_990.0,
                                                                          10_020.0)),
                       ("random", (10_010.0, 10_030.0, 10_060.0))):
        r.snapshots += [snap(name, 10_000.0, T0, cause="start"),
                        *(snap(name, e, T0 + 300 * (i + 1)) for i, e in enumerate(path))]
    r.decisions += [{**decision("coin", ["open_long"], provider="rule"), "model": "random"},
                    {**decision("die", ["close"], provider="rule"), "model": "random"},
                    decision("random", ["hold"])]
    f = compute(r)
    by = {t.trader: t for t in f.traders}
    assert (by["coin"].strategy, by["random"].strategy, by["b"].model) == ("random", "llm",
                                                                           "rule-based")
    assert null_trader(f) == "coin"  # the first by name of the two, as on the leaderboard
    annotate(f, min_coverage=0.0)

    def returns(t: str) -> list[float]:
        return [x for _, x in by[t].cycle_returns]

    for t in ("a", "b", "die", "random"):
        assert by[t].stats["p_beats_random"] == prob_beats(returns(t), returns("coin"),
                                                           n_boot=2000), t
    assert by["coin"].stats["p_beats_random"] is None
    assert by["random"].stats["p_beats_random"] > 0.5  # it gained while coin lost
    board = markdown(f).split("## Leaderboard")[1].split("## Trading")[0]
    coin = next(line for line in board.splitlines() if "| coin |" in line)
    assert coin.endswith("| - |")  # the null is not compared with itself
    assert "trader of strategy random (the null)" in board
