"""The leaderboard: pure rows from the accounts, their statistics' uncertainty, a text table.

Sharpe and Sortino (`engine.paper.stats`) are shown only from `leaderboard.min_returns` per-cycle
returns on (None, "-" in the table, before). `board_stats` adds 95 % stationary-bootstrap CIs of
the total return and the Sharpe ratio over each account's newest kept returns, the deflated
Sharpe ratio (trials = the traders), and P(A beats B) for every pair of traders from a paired
stationary bootstrap over the cycles both were in. It is numpy work: the cycle runs it in a
thread.

Ranks respect that uncertainty: a trader's `rank` is 1 + the number of ranked traders that beat
it with P(A beats B) >= `leaderboard.beats_p` (0.95); traders no one beats share rank 1, and
while every P is withheld everyone ranks 1. `coverage` is the share of a trader's cycles with its
own valid decision (invalid answers, errors, timeouts, not_recorded, cool-down and spend-cap
cycles count against it); below `leaderboard.min_coverage` a row is ranked apart: `rank` None
(shown as an en dash), listed after the ranked rows. Rows stay sorted by return within each
group. With a trader of strategy `random` (the null), each row carries P(trader beats random).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.paper.stats import (
    SECONDS_PER_YEAR,
    block_length,
    bootstrap_ci,
    deflated_sharpe,
    prob_beats,
    release_resamples,
    sharpe_statistic,
    total_return,
)
from engine.settings import LeaderboardSettings

if TYPE_CHECKING:
    from engine.paper.accounts import Account

# keys each row gains from `board_stats` (None until there are enough returns)
STAT_KEYS = ("return_ci", "sharpe_ci", "deflated_sharpe")
UNRANKED = "\u2013"  # an en dash: how a row ranked apart shows its rank


def _pct(part: float, whole: float) -> float | None:
    return part / whole * 100 if whole else None


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def row(account: Account, marks: Mapping[str, float], now: float, *,
        min_returns: int = 2) -> dict[str, Any]:
    """Return one trader's leaderboard row."""
    st = account.state
    equity = account.equity(marks)
    cap = account.capital
    if st.stopped:
        status = "stopped"
    elif st.suspended_until is not None and now < st.suspended_until:
        status = "suspended"
    else:
        status = "active"
    drawdown = (st.peak_equity - equity) / st.peak_equity * 100 if st.peak_equity > 0 else 0.0
    return {
        "trader": account.trader,
        "equity": round(equity, 2),
        "return_pct": _r(_pct(equity - cap, cap), 3),
        "net_return_pct": _r(_pct(equity - st.llm_cost - cap, cap), 3),
        "realized_pnl": round(account.realized_pnl, 2),
        "unrealized_pnl": round(account.unrealized(marks), 2),
        "fees": round(account.fees, 2),
        "funding": round(account.funding, 2),
        "llm_cost": round(st.llm_cost, 4),
        "trades": st.trades,
        "wins": st.wins,
        "win_rate": _r(_pct(st.wins, st.trades), 1),
        "drawdown_pct": round(max(drawdown, 0.0), 2),
        "max_drawdown_pct": round(max(st.max_drawdown_pct, drawdown, 0.0), 2),
        "sharpe": _r(st.returns.sharpe(min_returns)),
        "sortino": _r(st.returns.sortino(min_returns)),
        "returns_n": st.returns.n,
        "invalid_rate": _r(_pct(st.invalid, st.decisions), 1),
        "coverage": coverage(st.decisions, st.invalid, st.skipped),
        "hold_rate": _r(_pct(st.holds, st.decisions), 1),
        "adjustments": st.adjustments,
        "latency_cost": round(st.latency_cost, 2),
        "liquidations": st.liquidations,
        "open_positions": len(account.positions),
        "status": status,
    }


def coverage(decisions: int, invalid: int, skipped: int) -> float | None:
    """Return the share of cycles with a valid decision of the trader's own (None: no cycle)."""
    cycles = decisions + skipped
    return None if cycles <= 0 else round((decisions - invalid) / cycles, 4)


def point_rows(accounts: Iterable[Account], marks: Mapping[str, float], now: float, *,
               min_returns: int = 2) -> tuple[dict[str, Any], ...]:
    """Return every trader's row of point estimates, best return first (no rank, no CI yet):
    what the accounts show now, kept while the bootstrap for `rank_rows` runs."""
    return tuple(sorted((row(a, marks, now, min_returns=min_returns) for a in accounts),
                        key=lambda r: (-(r["return_pct"] or 0.0), r["trader"])))


def rank_rows(points: Sequence[Mapping[str, Any]], *, stats: BoardStats | None = None,
              min_coverage: float = 0.0, beats_p: float = 0.95,
              null: str | None = None) -> tuple[dict[str, Any], ...]:
    """Return `point_rows`' rows (left unchanged) with `stats`' fields and their honest ranks
    (see the module doc).

    Ranked rows come first, best return first; rows below `min_coverage` follow with rank None.
    `null` names the random trader: each other row gets `p_beats_random`.
    """
    rows = [dict(r) for r in points]
    for r in rows:
        if stats is not None:
            r.update({k: stats.per_trader.get(r["trader"], {}).get(k) for k in STAT_KEYS})
        cov = r["coverage"]
        r["ranked"] = cov is None or cov >= min_coverage
    probs = stats.probabilities() if stats is not None else {}
    ranked = [r["trader"] for r in rows if r["ranked"]]
    out = []
    for r in [*(r for r in rows if r["ranked"]), *(r for r in rows if not r["ranked"])]:
        t = r["trader"]
        rank = None
        if r["ranked"]:
            rank = 1 + sum(1 for u in ranked
                           if u != t and (probs.get((u, t)) or 0.0) >= beats_p)
        p_null = probs.get((t, null)) if null is not None and t != null else None
        out.append({"rank": rank, **r,
                    "p_beats_random": None if p_null is None else round(p_null, 4)})
    return tuple(out)


# ---------------------------------------------------------------- uncertainty


@dataclass(frozen=True, slots=True)
class BoardStats:
    """The leaderboard's statistics beyond the point estimates."""

    per_trader: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    pairwise: tuple[dict[str, Any], ...] = ()  # {"a", "b", "p_a_beats_b", "n"}, a before b
    info: Mapping[str, Any] = field(default_factory=dict)  # annualization, levels, sizes

    def probabilities(self) -> dict[tuple[str, str], float]:
        """Return P(a beats b) for every ordered pair whose probability is shown."""
        out: dict[tuple[str, str], float] = {}
        for p in self.pairwise:
            prob = p["p_a_beats_b"]
            if prob is not None:
                out[(p["a"], p["b"])] = prob
                out[(p["b"], p["a"])] = round(1 - prob, 4)
        return out

    def ranked_pairs(self, order: Sequence[str]) -> tuple[dict[str, Any], ...]:
        """Return the pairs with the better-ranked trader (in `order`) as `a`."""
        rank = {t: i for i, t in enumerate(order)}
        out = []
        for p in self.pairwise:
            if rank.get(p["a"], math.inf) > rank.get(p["b"], math.inf):
                prob = p["p_a_beats_b"]
                p = {**p, "a": p["b"], "b": p["a"],
                     "p_a_beats_b": None if prob is None else round(1 - prob, 4)}
            out.append(p)
        return tuple(sorted(out, key=lambda p: (rank.get(p["a"], math.inf),
                                                rank.get(p["b"], math.inf))))


def _pair(x: Sequence[float] | None, digits: int) -> list[float] | None:
    return None if x is None else [round(x[0], digits), round(x[1], digits)]


def _moments(r: np.ndarray) -> tuple[float, float, float] | None:
    """Return the per-period Sharpe, skewness and (plain) kurtosis, or None without variance."""
    std = float(r.std(ddof=1))
    if not std > 1e-12:
        return None
    z = (r - r.mean()) / r.std()
    return float(r.mean()) / std, float(np.mean(z ** 3)), float(np.mean(z ** 4))


def board_stats(series: Mapping[str, Sequence[tuple[float, float]]],
                periods_per_year: Mapping[str, float | None],
                settings: LeaderboardSettings) -> BoardStats:
    """Return CIs per trader and P(A beats B) per pair from each trader's (ts, return) series."""
    try:
        return _board_stats(series, periods_per_year, settings)
    finally:
        release_resamples()  # the next refresh has a longer series: nothing to share with it


def _board_stats(series: Mapping[str, Sequence[tuple[float, float]]],
                 periods_per_year: Mapping[str, float | None],
                 settings: LeaderboardSettings) -> BoardStats:
    n_boot, level, min_n = settings.bootstrap_samples, settings.ci_level, settings.min_returns
    per: dict[str, dict[str, Any]] = {}
    blocks: dict[str, int] = {}
    moments: dict[str, tuple[int, tuple[float, float, float]]] = {}
    for trader, pairs in series.items():
        r = np.fromiter((x for _, x in pairs), dtype=float, count=len(pairs))
        ppy = periods_per_year.get(trader)
        if r.size < min_n or ppy is None:
            per[trader] = dict.fromkeys(STAT_KEYS)
            continue
        block = blocks[trader] = block_length(r)
        ret = bootstrap_ci(r, total_return, n_boot=n_boot, level=level, block=block)
        shp = bootstrap_ci(r, sharpe_statistic(ppy), n_boot=n_boot, level=level, block=block)
        per[trader] = {"return_ci": _pair(None if ret is None else (ret[0] * 100, ret[1] * 100),
                                          3),
                       "sharpe_ci": _pair(shp, 2), "deflated_sharpe": None}
        m = _moments(r)
        if m is not None:
            moments[trader] = (r.size, m)
    if moments:
        sharpes = [m[0] for _, m in moments.values()]
        variance = statistics.variance(sharpes) if len(sharpes) > 1 else 0.0
        for trader, (n, (sr, skew, kurt)) in moments.items():
            dsr = deflated_sharpe(sr, n, len(sharpes), skew, kurt, variance)
            per[trader]["deflated_sharpe"] = None if math.isnan(dsr) else round(dsr, 4)
    pairwise: list[dict[str, Any]] = []  # `pairs` above is one series of (ts, return)
    for a, b in itertools.combinations(sorted(series), 2):
        rb = dict(series[b])
        common = [(x, rb[ts]) for ts, x in series[a] if ts in rb]
        p = None
        if len(common) >= min_n:
            xa, xb = zip(*common, strict=True)
            p = prob_beats(xa, xb, n_boot=n_boot)
        pairwise.append({"a": a, "b": b, "p_a_beats_b": None if p is None else round(p, 4),
                         "n": len(common)})
    known = sorted(v for v in periods_per_year.values() if v)
    ppy_mid = known[len(known) // 2] if known else None
    info = {
        "returns": "per-cycle equity returns (one per cycle snapshot)",
        "annualization": "sqrt(periods per year); a period is the mean time between cycles, "
                         "a year 365 days; no risk-free rate",
        "periods_per_year": None if ppy_mid is None else round(ppy_mid, 1),
        "period_seconds": None if ppy_mid is None else round(SECONDS_PER_YEAR / ppy_mid, 1),
        "min_returns": min_n, "ci_level": level, "bootstrap_samples": n_boot,
        "returns_kept": settings.returns_kept, "bootstrap": "stationary (Politis & Romano), "
        "mean block length by Politis & White (2004, corrected 2009), spread widened to the "
        "prewhitened long-run variance with t quantiles",
        "block_lengths": blocks, "min_coverage": settings.min_coverage,
        "beats_p": settings.beats_p,
    }
    return BoardStats(per, tuple(pairwise), info)


_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (header, key, format)
    ("#", "rank", "rank"),
    ("trader", "trader", "s"),
    ("equity", "equity", ",.2f"),
    ("ret%", "return_pct", "+.2f"),
    ("net%", "net_return_pct", "+.2f"),
    ("realized", "realized_pnl", "+,.2f"),
    ("unreal", "unrealized_pnl", "+,.2f"),
    ("fees", "fees", ",.2f"),
    ("funding", "funding", "+,.2f"),
    ("llm$", "llm_cost", ".2f"),
    ("trades", "trades", "d"),
    ("win%", "win_rate", ".0f"),
    ("maxDD%", "max_drawdown_pct", ".1f"),
    ("ret95%", "return_ci", "ci2"),
    ("sharpe", "sharpe", "+.2f"),
    ("sharpe95%", "sharpe_ci", "ci2"),
    ("sortino", "sortino", "+.2f"),
    ("inval%", "invalid_rate", ".0f"),
    ("cover%", "coverage", "pct"),
    ("P>rand", "p_beats_random", ".2f"),
    ("hold%", "hold_rate", ".0f"),
    ("adj", "adjustments", "d"),
    ("latency", "latency_cost", "+,.2f"),
    ("pos", "open_positions", "d"),
    ("status", "status", "s"),
)


def _cell(value: Any, fmt: str) -> str:
    if fmt == "rank":
        return UNRANKED if value is None else str(value)
    if value is None:
        return "-"
    if fmt == "pct":
        return f"{value * 100:.0f}"
    if fmt == "ci2":  # a confidence interval [lo, hi]
        return f"[{value[0]:+.2f},{value[1]:+.2f}]"
    return format(value, fmt)


def render_table(rows: Iterable[Mapping[str, Any]], *, info: Mapping[str, Any] | None = None,
                 pairwise: Sequence[Mapping[str, Any]] = ()) -> str:
    """Render leaderboard rows as a fixed-width text table for the console.

    With `info`, a note on the statistics follows; with `pairwise`, one line per pair of traders
    with P(A beats B).
    """
    rows = list(rows)
    cells = [[h for h, _, _ in _COLUMNS]]
    for r in rows:
        cells.append([_cell(r.get(key), fmt) for _, key, fmt in _COLUMNS])
    widths = [max(len(c[i]) for c in cells) for i in range(len(_COLUMNS))]
    out = []
    for n, line in enumerate(cells):
        parts = [c.ljust(w) if _COLUMNS[i][2] == "s" else c.rjust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(parts).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    if any(r.get("rank") is None for r in rows):
        floor = (info or {}).get("min_coverage")
        out.append(f"{UNRANKED}: ranked apart, coverage (cycles with a valid decision of its own)"
                   f" below {'the minimum' if floor is None else f'{floor:.0%}'}")
    if info:
        out.append(_note(info))
        need = int(info.get("min_returns") or 0)
        short = [int(r["returns_n"]) for r in rows if r.get("returns_n") is not None
                 and int(r["returns_n"]) < need]
        if short:  # why the statistics show "-": too few returns yet
            out.append(f"-: withheld, needs {need} returns, has {min(short)}")
    shown = [p for p in pairwise if p.get("p_a_beats_b") is not None]
    if shown:
        out.append("P(A beats B), paired bootstrap of total return over common cycles:")
        out.extend(f"  {p['a']} > {p['b']}: {p['p_a_beats_b']:.2f} ({p['n']} cycles)"
                   for p in shown)
    return "\n".join(out)


def _note(info: Mapping[str, Any]) -> str:
    ppy, period = info.get("periods_per_year"), info.get("period_seconds")
    per = f"x sqrt({ppy:,.0f}) (a cycle every {period:g} s, 365-day year)" if ppy else \
        "x sqrt(periods per year)"
    return (f"sharpe/sortino: per-cycle returns, annualized {per}, no risk-free rate, shown from "
            f"{info.get('min_returns')} returns; {info.get('ci_level', 0.95):.0%} CIs: "
            f"stationary block bootstrap, {info.get('bootstrap_samples')} resamples of the newest "
            f"{info.get('returns_kept')} returns; rank = 1 + traders beating it with "
            f"P >= {info.get('beats_p', 0.95):.2f}")
