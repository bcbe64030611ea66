"""Return statistics: per-cycle equity returns and the Sharpe ratio built from them.

Sharpe is computed from the per-cycle simple returns of equity (r = E_i / E_(i-1) - 1, one point
per cycle snapshot), as mean / sample standard deviation, annualized by sqrt(periods per year) where
a period is the observed mean time between cycle snapshots and a year is 365 days (crypto trades
around the clock). The running mean and variance (Welford) live in the account state, so the
figure survives a restart without keeping the whole series. No risk-free rate is subtracted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

SECONDS_PER_YEAR = 365 * 86_400


@dataclass(slots=True)
class ReturnStats:
    """Running statistics of per-cycle equity returns (Welford's algorithm)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    last_equity: float | None = None
    last_ts: float | None = None
    dt_sum: float = 0.0

    def add(self, equity: float, ts: float) -> None:
        """Add one equity point of the series."""
        if self.last_equity is not None and self.last_ts is not None and self.last_equity > 0:
            if ts <= self.last_ts:
                return  # same instant (a second snapshot of one cycle): not a new period
            r = equity / self.last_equity - 1
            self.n += 1
            delta = r - self.mean
            self.mean += delta / self.n
            self.m2 += delta * (r - self.mean)
            self.dt_sum += ts - self.last_ts
        self.last_equity = equity
        self.last_ts = ts

    def sharpe(self) -> float | None:
        """Return the annualized Sharpe ratio, or None with fewer than 2 returns or no variance."""
        if self.n < 2 or self.dt_sum <= 0:
            return None
        std = math.sqrt(self.m2 / (self.n - 1))
        if std <= 1e-15:
            return None
        periods_per_year = SECONDS_PER_YEAR / (self.dt_sum / self.n)
        return self.mean / std * math.sqrt(periods_per_year)

    def to_dict(self) -> dict[str, Any]:
        """Return the statistics as JSON-able data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReturnStats:
        """Rebuild from `to_dict` output."""
        return cls(**{k: data[k] for k in ("n", "mean", "m2", "last_equity", "last_ts", "dt_sum")
                      if k in data})
