"""The leaderboard's uncertainty: Sharpe, Sortino, bootstrap CIs, P(leader beats), deflated Sharpe.

All from `engine.paper.stats` over each trader's per-cycle equity returns in the run:
- `return_ci`: 95 % percentile bootstrap CI of the compounded return over the run (%);
- `sharpe_ci`: the same for the annualized Sharpe ratio;
- `p_beats_next`: P(this trader's total return > the next-ranked trader's), a paired bootstrap over
  the cycles both have returns for (so the run's luck is shared);
- `rank`: 1 + the number of traders that beat it with P >= 0.95 (as on the leaderboard); None
  for a trader whose coverage is below `min_coverage` (listed after the ranked ones);
- `p_beats_random`: P(this trader beats the null, the trader of strategy `random` (the first by
  name if several), as on the leaderboard), when there is one;
- `deflated_sharpe`: with several traders compared, the probability that the trader's Sharpe is
  above the best Sharpe that that many unskilled traders would show by chance (Bailey & López de
  Prado); the correction for comparing many variants.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from engine.paper import stats
from engine.report.figures import RunFigures, TraderFigures, null_trader

N_BOOT = 2000
LEVEL = 0.95


def _returns(t: TraderFigures) -> np.ndarray:
    return np.array([r for _, r in t.cycle_returns], dtype=float)


def _moments(r: np.ndarray) -> tuple[float, float]:
    """Return (skewness, plain kurtosis) of a series; normal values when undefined."""
    std = r.std()
    if r.size < 3 or std <= 1e-15:
        return 0.0, 3.0
    z = (r - r.mean()) / std
    return float(np.mean(z ** 3)), float(np.mean(z ** 4))


def withheld(min_returns: int, has: int) -> str:
    """Return why a figure is withheld: too few per-cycle returns."""
    return f"needs {min_returns} returns, has {has}"


def _prob(a: TraderFigures, b: TraderFigures, min_returns: int) -> float | None:
    ra, rb = dict(a.cycle_returns), dict(b.cycle_returns)
    common = sorted(set(ra) & set(rb))
    if len(common) < min_returns:
        return None
    return stats.prob_beats([ra[k] for k in common], [rb[k] for k in common], n_boot=N_BOOT)


def _rank(figures: RunFigures, min_returns: int, min_coverage: float) -> None:
    """Set each trader's honest rank and P(beats random); ranked traders first, by return."""
    ts = figures.traders
    null = null_trader(figures)
    probs = {(a.trader, b.trader): _prob(a, b, min_returns)
             for a, b in itertools.permutations(ts, 2)}
    ranked = [t for t in ts if t.coverage is None or t.coverage >= min_coverage]
    for t in ts:
        t.stats["rank"] = (1 + sum(1 for u in ranked if u is not t
                                   and (probs[(u.trader, t.trader)] or 0.0) >= LEVEL)
                           if t in ranked else None)
        t.stats["p_beats_random"] = None if null is None else probs.get((t.trader, null))
    figures.traders[:] = [*ranked, *(t for t in ts if t not in ranked)]


def annotate(figures: RunFigures, *, min_returns: int = 2, min_coverage: float = 0.95) -> None:
    """Fill each trader's `stats` with its Sharpe, Sortino, CIs and comparisons.

    As on the leaderboard, a trader with fewer than `min_returns` per-cycle returns (the
    `leaderboard.min_returns` setting) gets none of them: "-" in the report.
    """
    traders = figures.traders
    per_period: dict[str, float] = {}
    for t in traders:
        r = _returns(t)
        ppy = t.periods_per_year or 0.0
        out: dict[str, Any] = {"n_returns": int(r.size)}
        if r.size < min_returns:
            out["withheld"] = withheld(min_returns, int(r.size))
            t.stats = out
            continue
        out["sharpe"] = stats.sharpe(r, ppy) if ppy else None
        out["sortino"] = stats.sortino(r, ppy) if ppy else None
        ci = stats.bootstrap_ci(r, stats.total_return, n_boot=N_BOOT, level=LEVEL)
        out["return_ci"] = None if ci is None else (ci[0] * 100, ci[1] * 100)
        out["sharpe_ci"] = (stats.bootstrap_ci(r, stats.sharpe_statistic(ppy), n_boot=N_BOOT,
                                               level=LEVEL) if ppy else None)
        raw = stats.sharpe(r, 1.0)
        if raw is not None:
            per_period[t.trader] = raw
        t.stats = out
    _rank(figures, min_returns, min_coverage)
    traders = figures.traders
    for a, b in itertools.pairwise(traders):
        ra, rb = dict(a.cycle_returns), dict(b.cycle_returns)
        common = sorted(set(ra) & set(rb))
        if len(common) < min_returns:
            a.stats["p_beats_next"] = None
            a.stats.setdefault("withheld", withheld(min_returns, len(common)))
            continue
        a.stats["p_beats_next"] = stats.prob_beats(
            [ra[k] for k in common], [rb[k] for k in common], n_boot=N_BOOT)
    if len(per_period) > 1:
        variance = float(np.var(list(per_period.values()), ddof=1))
        for t in traders:
            if t.trader in per_period:
                skew, kurt = _moments(_returns(t))
                dsr = stats.deflated_sharpe(per_period[t.trader], t.stats["n_returns"],
                                            len(per_period), skew, kurt, variance)
                t.stats["deflated_sharpe"] = None if math.isnan(dsr) else dsr
