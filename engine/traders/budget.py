"""Spend caps on LLM calls: per trader and for the whole run, per UTC day and in total. Pure.

`Budget` adds up what each trader's calls cost (the same prices as the leaderboard's net return:
the models table) and says, before a trader is asked, whether a cap is reached. A daily cap
lasts until the next 00:00 UTC; a total cap for the rest of the run (totals count from the
engine's start). A trader at a cap holds with reason `budget` and makes no call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.llm_settings import BudgetSettings

DAY = 86_400


@dataclass(frozen=True, slots=True)
class TraderCaps:
    """One trader's own caps in USD (None: no cap of that kind)."""

    daily_usd: float | None = None
    total_usd: float | None = None


@dataclass(slots=True)
class _Spend:
    day: int = -1
    today: float = 0.0
    total: float = 0.0

    def add(self, usd: float, day: int) -> None:
        if day != self.day:
            self.day, self.today = day, 0.0
        self.today += usd
        self.total += usd

    def on(self, day: int) -> float:
        return self.today if day == self.day else 0.0


@dataclass(slots=True)
class Budget:
    """What was spent, and which cap (if any) stops a trader now."""

    settings: BudgetSettings
    caps: Mapping[str, TraderCaps] = field(default_factory=dict)
    _traders: dict[str, _Spend] = field(default_factory=dict)
    _run: _Spend = field(default_factory=_Spend)

    def add(self, trader: str, usd: float, now: float) -> None:
        """Count `usd` spent by `trader` at `now` (epoch seconds)."""
        if usd <= 0:
            return
        day = int(now // DAY)
        self._traders.setdefault(trader, _Spend()).add(usd, day)
        self._run.add(usd, day)

    def spent(self, trader: str, now: float) -> tuple[float, float]:
        """Return `trader`'s spend today and in total."""
        s = self._traders.get(trader, _Spend())
        return s.on(int(now // DAY)), s.total

    def capped(self, trader: str, now: float) -> tuple[str, float, float, float] | None:
        """Return (cap name, cap USD, spent USD, until) when a cap stops `trader`, else None.

        `until` is the next 00:00 UTC for a daily cap and infinity for a total cap.
        """
        day = int(now // DAY)
        mine = self._traders.get(trader, _Spend())
        own = self.caps.get(trader, TraderCaps())
        s = self.settings
        next_day = float((day + 1) * DAY)
        checks = (
            ("trader_total_usd", own.total_usd or s.trader_total_usd, mine.total, float("inf")),
            ("run_total_usd", s.run_total_usd, self._run.total, float("inf")),
            ("trader_daily_usd", own.daily_usd or s.trader_daily_usd, mine.on(day), next_day),
            ("run_daily_usd", s.run_daily_usd, self._run.on(day), next_day),
        )
        for name, cap, spent, until in checks:
            if cap is not None and spent >= cap:
                return name, cap, round(spent, 6), until
        return None
