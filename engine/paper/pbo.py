"""Walk-forward figures: per-cycle Sharpe, pooled results and the Probability of Backtest
Overfitting by combinatorially symmetric cross-validation (CSCV; Bailey, Borwein, López de Prado
and Zhu, "The probability of backtest overfitting", 2016).

Conventions (docs/backtests.md):
- the performance metric is the Sharpe ratio of per-cycle returns, mean / sample standard
  deviation (ddof 1), not annualised (ranks do not change); no returns or zero deviation: 0;
- the S submatrices are the walk-forward windows (S = the number of windows, even, at least 4);
  a set of windows is scored on its windows' per-cycle returns joined in time order;
- for each of the C(S, S/2) ways to pick S/2 windows as in-sample (IS), the rest out-of-sample
  (OOS): n* is the variant with the best IS Sharpe (the first one on a tie), its OOS rank r is
  1 for the worst .. N for the best of the N variants (tied Sharpes share their mean rank),
  ω = r / (N + 1), λ = logit(ω) = ln(ω / (1 - ω));
- PBO = the share of combinations with λ ≤ 0 (the IS winner at or below the OOS median).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MIN_VARIANTS = 3
MIN_WINDOWS = 4


def sharpe(returns: Sequence[float] | np.ndarray) -> float:
    """Return mean / sample std of per-cycle returns (0 for fewer than 2 or no deviation)."""
    r = np.asarray(returns, dtype=float)
    if r.size < 2:
        return 0.0
    std = float(r.std(ddof=1))
    return float(r.mean()) / std if std > 1e-15 else 0.0


def ranks(values: Sequence[float]) -> list[float]:
    """Return ascending ranks 1..N (1 = lowest), ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


@dataclass(frozen=True, slots=True)
class PBO:
    """The result of CSCV: the share of λ ≤ 0 and every combination's λ."""

    pbo: float
    logits: tuple[float, ...]
    combinations: int


def pbo(windows: Sequence[Mapping[str, Sequence[float]]]) -> PBO | None:
    """Return the PBO of the variants over `windows` (each: variant → its per-cycle returns in
    that window), or None with fewer than 3 variants, 4 windows or an odd number of windows."""
    s = len(windows)
    variants = sorted(set.intersection(*(set(w) for w in windows))) if windows else []
    if len(variants) < MIN_VARIANTS or s < MIN_WINDOWS or s % 2:
        return None
    n = len(variants)
    logits = []
    for chosen in itertools.combinations(range(s), s // 2):
        rest = [i for i in range(s) if i not in chosen]
        is_sharpe = [sharpe(_joined(windows, chosen, v)) for v in variants]
        oos_sharpe = [sharpe(_joined(windows, rest, v)) for v in variants]
        best = max(range(n), key=lambda i: (is_sharpe[i], -i))  # the first on a tie
        omega = ranks(oos_sharpe)[best] / (n + 1)
        logits.append(math.log(omega / (1 - omega)))
    share = sum(1 for lam in logits if lam <= 0) / len(logits)
    return PBO(share, tuple(logits), len(logits))


def withheld(variants: int, windows: int) -> str:
    """Return the sentence saying why `pbo` gave None for `variants` over `windows`."""
    return (f"Not computed: it needs at least {MIN_VARIANTS} variants and an even number of "
            f"windows, at least {MIN_WINDOWS} ({variants} variants, {windows} windows here).")


def described(result: PBO, windows: int) -> str:
    """Return one sentence stating a computed PBO and how it was computed."""
    return (f"PBO = {result.pbo:.4f} over {result.combinations} combinations of {windows // 2} "
            "in-sample windows (the share where the in-sample best variant ranks at or below the "
            "out-of-sample median: logit ≤ 0). Metric: Sharpe of per-cycle returns.")


def _joined(windows: Sequence[Mapping[str, Sequence[float]]], chosen: Sequence[int],
            variant: str) -> list[float]:
    return [r for i in sorted(chosen) for r in windows[i][variant]]


def pooled(windows: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, dict[str, float]]:
    """Return each variant's pooled result: compounded return % and Sharpe of every cycle."""
    out: dict[str, dict[str, float]] = {}
    for v in sorted({v for w in windows for v in w}):
        joined = [r for w in windows for r in w.get(v, ())]
        growth = float(np.prod([1 + r for r in joined])) if joined else 1.0
        out[v] = {"return_pct": (growth - 1) * 100, "sharpe": sharpe(joined),
                  "cycles": float(len(joined))}
    return out
