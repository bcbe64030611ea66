"""The drawdown and daily-loss limits, re-checked whenever an account's equity may have moved.

`Limits` asks the `RiskManager` to update an account's peak, day start, suspension and stop at
its current equity; when a limit trips or clears it logs `broker.limits` and, outside a change
that publishes its own snapshot, publishes the account's `risk` snapshot.
"""

from __future__ import annotations

import structlog

from engine.bus import Bus
from engine.events import AccountSnapshot
from engine.paper.accounts import Account
from engine.paper.ledger import Ledger
from engine.paper.marks import Marks
from engine.paper.risk import RiskManager
from engine.paper.views import AccountViews

log = structlog.get_logger("broker")


class Limits:
    """Risk limits checked at the accounts' current equity."""

    __slots__ = ("bus", "ledger", "marks", "risk", "views")

    def __init__(self, risk: RiskManager, ledger: Ledger, marks: Marks, views: AccountViews,
                 bus: Bus) -> None:
        self.risk, self.ledger, self.marks, self.views, self.bus = risk, ledger, marks, views, bus

    def check(self, trader: str, now: float, cycle_id: str | None,
              equity: float | None = None) -> None:
        """Update `trader`'s limits at `equity` (now's); publish a `risk` snapshot on a change."""
        acc = self.ledger.account(trader)
        if equity is None:
            equity = acc.equity(self.marks.for_account(acc))
        if self._update(acc, equity, now):
            self.bus.publish(self.views.snapshot(trader, "risk", cycle_id))

    def after_change(self, acc: Account, cause: str, cycle_id: str | None,
                     now: float) -> AccountSnapshot:
        """Update `acc`'s limits after a fill or funding; return its `cause` snapshot."""
        self._update(acc, acc.equity(self.marks.for_account(acc)), now)
        return self.views.snapshot(acc.trader, cause, cycle_id)

    def _update(self, acc: Account, equity: float, now: float) -> bool:
        change = self.risk.update_limits(acc, equity, now)
        if change is None:
            return False
        log.warning("broker.limits", trader=acc.trader, change=change,
                    suspended_until=acc.state.suspended_until, stopped=acc.state.stopped)
        return True
