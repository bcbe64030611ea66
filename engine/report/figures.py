"""A run's figures per trader, computed from its database rows (pure: no I/O).

Definitions (docs/reports.md and docs/glossary.md state them too):
- return %: (last equity of the run - starting capital) / starting capital (the first equity
  when the capital is unknown), as the console's leaderboard defines it;
- max drawdown %: the largest `drawdown_pct` among the run's snapshots (from the peak equity);
- trades: positions closed completely; a win nets realized PnL - fees - the funding paid on that
  position > 0; biggest win / loss: the best / worst such net; holding time: close - open;
- fees: sum of the fills' fees; funding: sum of the funding rows (> 0 paid);
- LLM: tokens (input + output + cache read + cache write) and cost of the run's decisions; the
  answers the LLM answer cache served (`llm_cache_hits`) and what they would have cost;
- invalid % and hold % of the decisions (a hold: no action but `hold`, invalid answers included),
  cool-down %: the trader's turns skipped in cool-down (`cycles.summary.cooldown`) over all turns;
- latency cost: growth of the account's `latency_cost` counter over the run.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from engine.paper.stats import SECONDS_PER_YEAR
from engine.report.data import RunRows


@dataclass(slots=True)
class TraderFigures:
    """Everything the report says about one trader in one run."""

    trader: str
    model: str = "-"
    # "llm", or a rule-based trader's strategy (its decision rows' model: "random" is the null)
    strategy: str | None = None
    capital: float | None = None
    start_equity: float = 0.0
    end_equity: float = 0.0
    return_pct: float = 0.0
    max_drawdown_pct: float = 0.0
    trades: int = 0
    wins: int = 0
    win_rate_pct: float | None = None
    biggest_win: float | None = None
    biggest_loss: float | None = None
    avg_holding_s: float | None = None
    fills: int = 0
    fees: float = 0.0
    funding: float = 0.0
    decisions: int = 0
    tokens: int = 0
    llm_cost_usd: float = 0.0
    cache_hits: int = 0  # answers served by the LLM answer cache
    cache_saved_usd: float = 0.0  # what those answers would have cost
    invalid_pct: float | None = None
    hold_pct: float | None = None
    cooldown_pct: float | None = None
    # share of its cycles with a valid decision of its own (cool-down and budget cycles count)
    coverage: float | None = None
    latency_cost: float = 0.0
    top_rules: list[tuple[str, int]] = field(default_factory=list)
    equity: list[tuple[float, float]] = field(default_factory=list)  # (ts, equity)
    cycle_returns: list[tuple[float, float]] = field(default_factory=list)  # (ts, return)
    periods_per_year: float | None = None  # a year over the mean time between cycle snapshots
    stats: dict[str, Any] = field(default_factory=dict)  # Sharpe, CIs, P(beats) (report.intervals)


@dataclass(slots=True)
class RunFigures:
    """The run and its traders, best return first."""

    run: dict[str, Any]
    started_at: float
    ended_at: float
    cycles: int
    cycles_ok: int
    traders: list[TraderFigures]

    @property
    def duration_s(self) -> float:
        return max(0.0, self.ended_at - self.started_at)


def _pct(part: float, whole: float) -> float | None:
    return part / whole * 100 if whole else None


def _is_hold(decision: dict[str, Any]) -> bool:
    return all(a.get("action") == "hold" for a in decision.get("actions") or ())


def compute(rows: RunRows) -> RunFigures:
    """Return the run's figures from its rows."""
    by: dict[str, TraderFigures] = {}

    def fig(trader: str) -> TraderFigures:
        if trader not in by:
            by[trader] = TraderFigures(trader)
        return by[trader]

    _equity(rows, fig)
    _trades(rows, fig)
    for f in rows.fills:
        t = fig(f["trader"])
        t.fills += 1
        t.fees += f["fee"]
    for f in rows.funding:
        fig(f["trader"]).funding += f["amount"]
    for h in rows.cache_hits:
        t = fig(h["trader"])
        t.cache_hits += 1
        t.cache_saved_usd += h["saved_usd"]
    _decisions(rows, fig)
    rules: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows.rejections:
        rules[r["trader"]][r["rule"]] += 1
    for trader, counts in rules.items():
        fig(trader).top_rules = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    times = [s["ts"] for s in rows.snapshots] + [c["finished_at"] for c in rows.cycles]
    started = rows.run["started_at"]
    traders = sorted(by.values(), key=lambda t: (-t.return_pct, t.trader))
    return RunFigures(
        run=rows.run, started_at=started, ended_at=max(times, default=started),
        cycles=len(rows.cycles), cycles_ok=sum(c["status"] == "ok" for c in rows.cycles),
        traders=traders)


def _equity(rows: RunRows, fig: Any) -> None:
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in rows.snapshots:  # id order: the order they were made in
        series[s["trader"]].append(s)
    for trader, snaps in series.items():
        t = fig(trader)
        first, last = snaps[0], snaps[-1]
        t.capital = last["capital"]
        t.start_equity, t.end_equity = first["equity"], last["equity"]
        # Against the starting capital, as the console's leaderboard defines it (a resumed
        # arena's first snapshot of this run is not where the trader started).
        base = t.capital if t.capital else t.start_equity
        t.return_pct = _pct(t.end_equity - base, base) or 0.0
        t.max_drawdown_pct = max(s["drawdown_pct"] for s in snaps)
        t.latency_cost = (last["latency_cost"] or 0.0) - (first["latency_cost"] or 0.0)
        t.equity = sorted((s["ts"], s["equity"]) for s in snaps)
        # cycle time → equity: the first snapshot of an instant, as ReturnStats.add keeps it
        # (the leaderboard's figures), in the order the snapshots were made
        cyc: dict[float, float] = {}
        for s in snaps:
            if s["cause"] == "cycle":
                cyc.setdefault(s["ts"], s["equity"])
        points = sorted(cyc.items())
        t.cycle_returns = [(tb, b / a - 1) for (_, a), (tb, b)
                           in itertools.pairwise(points) if a > 0]
        if len(points) > 1:
            t.periods_per_year = SECONDS_PER_YEAR / ((points[-1][0] - points[0][0])
                                                     / (len(points) - 1))


def _trades(rows: RunRows, fig: Any) -> None:
    paid: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for f in rows.funding:
        paid[f["trader"], f["symbol"]].append((f["ts"], f["amount"]))
    nets: dict[str, list[float]] = defaultdict(list)
    held: dict[str, list[float]] = defaultdict(list)
    for p in rows.positions:
        if p["event"] != "close":
            continue
        opened = p["opened_at"] if p["opened_at"] is not None else p["ts"]
        funding = sum(a for ts, a in paid[p["trader"], p["symbol"]] if opened <= ts <= p["ts"])
        nets[p["trader"]].append(p["realized_pnl"] - p["fees"] - funding)
        held[p["trader"]].append(p["ts"] - opened)
    for trader, net in nets.items():
        t = fig(trader)
        t.trades = len(net)
        t.wins = sum(n > 0 for n in net)
        t.win_rate_pct = _pct(t.wins, t.trades)
        t.biggest_win = max(net) if max(net) > 0 else None
        t.biggest_loss = min(net) if min(net) < 0 else None
        t.avg_holding_s = sum(held[trader]) / len(held[trader])


def null_trader(figures: RunFigures) -> str | None:
    """Return the null: the trader of strategy `random` (the first by name if several)."""
    return min((t.trader for t in figures.traders if t.strategy == "random"), default=None)


def _decisions(rows: RunRows, fig: Any) -> None:
    holds: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    for d in rows.decisions:
        t = fig(d["trader"])
        t.decisions += 1
        t.model = d["model"] if d["provider"] != "rule" else "rule-based"
        t.strategy = d["model"] if d["provider"] == "rule" else "llm"
        t.tokens += (d["input_tokens"] + d["output_tokens"] + d["cache_read_tokens"]
                     + d["cache_write_tokens"])
        t.llm_cost_usd += d["cost_usd"]
        invalid[d["trader"]] += not d["valid"]
        holds[d["trader"]] += _is_hold(d["decision"])
    cooled: Counter[str] = Counter()
    capped: Counter[str] = Counter()
    for c in rows.cycles:
        for trader in (c["summary"] or {}).get("cooldown") or ():
            cooled[trader] += 1
        for trader in (c["summary"] or {}).get("budget") or ():
            capped[trader] += 1
    for trader in set(holds) | set(cooled) | set(invalid) | set(capped):
        t = fig(trader)
        due = t.decisions + cooled[trader] + capped[trader]
        t.coverage = (t.decisions - invalid[trader]) / due if due else None
        t.invalid_pct = _pct(invalid[trader], t.decisions)
        t.hold_pct = _pct(holds[trader], t.decisions)
        t.cooldown_pct = _pct(cooled[trader], t.decisions + cooled[trader])
