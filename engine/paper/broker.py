"""The paper broker: accounts filled and watched on live prices, composed of small parts.

`PaperBroker` builds its parts once and hands each the others it needs, in its constructor:

- `Ledger` (every account) and `SymbolFilters` (step, tick, minimum, margin tiers);
- `Marks` (mark prices, falling back to the book) and `Watches` (positions per symbol with
  their nearest triggers);
- `AccountViews` (prompt views and AccountSnapshot rows) and `BoardView` (the leaderboard);
- `Limits` (drawdown and daily-loss limits), `FillEvents` (what a fill publishes);
- `Executor` (fills decisions) and `MarketTriggers` (stops, liquidation, funding on ticks).

The broker itself opens and restores accounts, reviews decisions against the `RiskManager`,
and runs the service: the trigger watch on the bus, timer snapshots, missed funding at start.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from engine.bus import Bus
from engine.clock import Clock
from engine.decision import Action, Decision
from engine.events import AccountSnapshot, BookTicker, DecisionRejected, Leaderboard, MarkPrice
from engine.halt import TradingGate
from engine.paper.accounts import Account, AccountState, Position
from engine.paper.board_worker import BoardWorker
from engine.paper.execution import Executor
from engine.paper.fills import FillEvents
from engine.paper.funding import FundingHistory, settle_missed_funding
from engine.paper.leaderboard import BoardStats
from engine.paper.ledger import Ledger, SymbolFilters
from engine.paper.limits import Limits
from engine.paper.marks import Marks, QuoteSource
from engine.paper.risk import RiskManager
from engine.paper.triggers import FundingOutcome, MarketTriggers
from engine.paper.views import AccountViews, BoardView
from engine.paper.watch import Watches
from engine.settings import BrokerSettings, LeaderboardSettings, RiskSettings, SymbolFilter

log = structlog.get_logger("broker")


class PaperBroker:
    """Paper accounts of every trader, filled and watched on live prices."""

    def __init__(self, settings: BrokerSettings, risk: RiskSettings, bus: Bus, clock: Clock,
                 book: QuoteSource, *, snapshot_interval: float = 60.0,
                 symbols: Iterable[str] | None = None,
                 max_price_age: float | None = None,
                 board: LeaderboardSettings | None = None,
                 funding_history: FundingHistory | None = None,
                 gate: TradingGate | None = None,
                 board_worker: BoardWorker | None = None) -> None:
        self.settings = settings
        self.gate = gate or TradingGate()  # halted (engine.halt): the accounts are frozen
        self.bus, self.clock, self.book = bus, clock, book
        self.snapshot_interval = snapshot_interval
        self.symbols = frozenset(symbols) if symbols is not None else None
        self.funding_history = funding_history  # at start: funding missed while down
        self.accounts = Ledger()
        self.filters = SymbolFilters(settings)
        self.risk = RiskManager(risk, settings, self.filters.filter_for)
        self.marks = Marks(book)
        self.watches = Watches()
        self.views = AccountViews(self.accounts, self.marks, clock)
        self.board = BoardView(self.accounts, self.marks, bus, clock,
                               board or LeaderboardSettings(), board_worker)
        self.limits = Limits(self.risk, self.accounts, self.marks, self.views, bus)
        self.fills = FillEvents(self.watches)
        # feed.max_price_age_seconds: a decision never fills on a price older than this
        self.executor = Executor(settings, self.accounts, self.filters, book, self.watches,
                                 self.fills, self.limits, bus, clock, max_price_age)
        self.triggers = MarketTriggers(settings, self.accounts, self.filters, self.marks,
                                       self.watches, self.fills, self.limits, bus, clock,
                                       self.gate)

    # ------------------------------------------------------------ the parts' answers

    def filter_for(self, symbol: str) -> SymbolFilter:
        """Return the symbol's filters: exchangeInfo's when set, else the settings'."""
        return self.filters.filter_for(symbol)

    def set_filters(self, filters: Mapping[str, SymbolFilter | Mapping[str, Any]]) -> None:
        """Use these per-symbol filters (e.g. from exchangeInfo) instead of the settings'."""
        self.filters.set(filters)

    def execute(self, trader: str, actions: list[Action], cycle_id: str,
                snapshot: Any) -> list[object]:
        """Fill approved actions at bid/ask + slippage; publish and return the events."""
        return self.executor.execute(trader, actions, cycle_id, snapshot)

    def on_market(self, event: object) -> None:
        """Check the triggers of this event's symbol, and settle funding at funding times."""
        self.triggers.on_market(event)

    def book_triggers(self, symbol: str) -> bool:
        """Return True while a BookTicker of `symbol` can trigger anything."""
        return self.triggers.book_triggers(symbol)

    def settle_funding(self, symbol: str, when: float, rate: float,
                       mark: float) -> FundingOutcome:
        """Charge the funding of `when` on `symbol`'s positions at `mark` (the book's if NaN)."""
        return self.triggers.settle_funding(symbol, when, rate, mark)

    def snapshot(self, trader: str, cause: str, cycle_id: str | None,
                 ts: float | None = None) -> AccountSnapshot:
        """Return `trader`'s whole account at `ts` (now): money, positions, baselines, counters."""
        return self.views.snapshot(trader, cause, cycle_id, ts)

    def account_view(self, trader: str) -> dict[str, Any]:
        """Return the account as the trader's prompt shows it."""
        return self.views.account_view(trader)

    def positions_view(self, trader: str) -> tuple[dict[str, Any], ...]:
        """Return each open position as the trader's prompt shows it."""
        return self.views.positions_view(trader)

    def recent_fills(self, trader: str, n: int) -> tuple[dict[str, Any], ...]:
        """Return the trader's last `n` fills, oldest first."""
        return self.views.recent_fills(trader, n)

    def leaderboard(self, cycle_id: str | None, *, publish: bool = True,
                    log_rows: bool = True) -> Leaderboard:
        """Return the leaderboard; when `publish`, also publish (and when `log_rows`, log) it."""
        return self.board.leaderboard(cycle_id, publish=publish, log_rows=log_rows)

    async def refresh_board_stats(self) -> BoardStats:
        """Recompute the CIs and pairwise comparisons from the kept returns, off the loop."""
        return await self.board.refresh_board_stats()

    def publish_board_when_refreshed(self, cycle_id: str | None, *, log_rows: bool = True,
                                     on_board: Callable[[Leaderboard], None] | None = None
                                     ) -> asyncio.Task[Leaderboard | None]:
        """Publish `cycle_id`'s leaderboard (points as of now) once its statistics are
        refreshed, without waiting for it (BoardView.publish_when_refreshed)."""
        return self.board.publish_when_refreshed(cycle_id, log_rows=log_rows, on_board=on_board)

    async def board_published(self) -> None:
        """Wait until the leaderboard being refreshed, if any, is published."""
        await self.board.published()

    # ------------------------------------------------------------ state the parts keep

    @property
    def market_errors(self) -> int:
        """Market events whose handling raised (each logged as broker.market_event_failed)."""
        return self.triggers.errors

    @property
    def board_settings(self) -> LeaderboardSettings:
        return self.board.settings

    @board_settings.setter
    def board_settings(self, value: LeaderboardSettings) -> None:
        self.board.settings = value

    @property
    def board_stats(self) -> BoardStats | None:
        """The CIs and pairwise comparisons of the last `refresh_board_stats`."""
        return self.board.stats

    # ------------------------------------------------------------ accounts

    def open_account(self, trader: str, capital: float) -> None:
        """Open a fresh account for `trader` with `capital` USDT."""
        now = self.clock.time()
        self.accounts[trader] = Account.new(trader, capital, now)
        self.accounts[trader].state.returns.trim(self.board.settings.returns_kept)
        log.info("broker.account_opened", trader=trader, capital=capital)

    def restore(self, trader: str, snapshot: Mapping[str, Any]) -> None:
        """Rebuild `trader`'s account exactly from its latest AccountSnapshot (as a dict)."""
        state_data = _loads(snapshot["state"])
        positions = [Position.from_dict(p) for p in _loads(snapshot["positions"])]
        acc = Account(trader=trader, capital=float(state_data["capital"]),
                      cash=float(snapshot["cash"]), state=AccountState.from_dict(state_data),
                      realized_pnl=float(snapshot["realized_pnl"]), fees=float(snapshot["fees"]),
                      funding=float(snapshot["funding"]),
                      positions={p.symbol: p for p in positions})
        acc.state.returns.restore_series(snapshot.get("returns_series"),  # from cycle rows
                                         self.board.settings.returns_kept)
        self.accounts[trader] = acc
        for p in positions:
            # the brackets in force now (an opened position gets them from `Account.open`)
            p.tiers = self.filters.filter_for(p.symbol).tiers()
            p.refresh()
            self.watches.reindex(trader, p.symbol, p)
        log.info("broker.account_restored", trader=trader, positions=len(positions),
                 cash=round(acc.cash, 2), ledger_gap=round(acc.ledger_gap(), 6))

    def record_decision(self, trader: str, *, valid: bool, holds: bool, cost_usd: float,
                        skipped: bool = False) -> None:
        """Count one decision for the leaderboard: validity, hold, LLM cost (or a cycle it was
        due but not asked: a cool-down or a spend cap, which counts against its coverage)."""
        st = self.accounts.account(trader).state
        if skipped:
            st.skipped += 1
            return
        st.decisions += 1
        st.invalid += not valid
        st.holds += bool(holds)
        st.llm_cost += cost_usd

    # ------------------------------------------------------------ the cycle

    def mark_all(self) -> None:
        """Refresh every mark from the book, then each account's peak, drawdown and limits."""
        self.marks.refresh({s for acc in self.accounts.values() for s in acc.positions})
        now = self.clock.time()
        for trader in self.accounts:
            self.limits.check(trader, now, None)

    def blocked_reason(self, trader: str, now: float) -> str | None:
        """Return the rule keeping `trader` out of this cycle (max_drawdown/daily_loss_limit)."""
        self.limits.check(trader, now, None)
        return self.risk.blocked(self.accounts.account(trader), now)

    def review(self, trader: str, decision: Decision, snapshot: Any, now: float,
               cycle_id: str) -> tuple[list[Action], list[DecisionRejected]]:
        """Check every action against the risk rules, cumulatively; return accepted and refused.

        The refusals are returned, not published: the cycle publishes them.
        """
        acc = self.accounts.account(trader)
        self.limits.check(trader, now, cycle_id)
        stale = frozenset(getattr(snapshot, "stale", ()) or ())
        wanted = {a.symbol for a in decision.actions} | set(acc.positions)
        prices = {s: self.marks.prices(s) for s in wanted}
        accepted, refusals = self.risk.review(
            acc, decision.actions, symbols=self._known_symbols(snapshot), prices=prices,
            stale=stale, equity=acc.equity(self.marks.for_account(acc)), now=now)
        rejected = [DecisionRejected(cycle_id, trader, r.symbol, r.action, r.rule, r.detail, now)
                    for r in refusals]
        return accepted, rejected

    def _known_symbols(self, snapshot: Any) -> frozenset[str]:
        if self.symbols is not None:
            return self.symbols
        known = set(self.settings.symbols) | self.filters.loaded()
        known.update(getattr(snapshot, "symbols", None) or ())
        return frozenset(known)

    def publish_snapshots(self, cause: str, cycle_id: str | None) -> None:
        """Publish every trader's AccountSnapshot (a cycle snapshot is a Sharpe series point).

        Each account's marks and equity are taken once: the limits, the return and the row."""
        now = self.clock.time()
        for trader, acc in self.accounts.items():
            marks = self.marks.for_account(acc)
            equity = acc.equity(marks)
            self.limits.check(trader, now, cycle_id, equity)
            if cause == "cycle":  # the same equity and time as the snapshot row: recovery
                acc.state.returns.add(equity, now)  # rebuilds from it
            self.bus.publish(self.views.snapshot_at(acc, marks, cause, cycle_id, now))

    # ------------------------------------------------------------ the service

    async def run(self) -> None:
        """Watch every market event for triggers and publish timer snapshots, until cancelled.

        The watch is a bus handler, not a task: the bus hands it what was published at its next
        flush (the loop's next turn; a replay's, right after each record; a cycle's, before it
        starts, reviews and fills), so a tick costs no task wake-up and a replay needs no loop
        turn per frame for it. A trigger fills at its event's receive time."""
        sub = self.bus.subscribe("broker", (BookTicker, MarkPrice), capacity=100_000,
                                 policy="block", handler=self.triggers.on_events)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._timer(), name="broker.snapshots")
                if self.funding_history is not None:
                    tg.create_task(settle_missed_funding(self, self.funding_history,
                                                         self.clock.time()),
                                   name="broker.missed_funding")
        finally:
            sub.close()

    async def _timer(self) -> None:
        due = self.clock.time() + self.snapshot_interval
        while True:
            await self.clock.sleep_until(due)
            try:
                if not self.gate.halted:  # frozen accounts: nothing new to record
                    self.publish_snapshots("timer", None)
            except Exception:  # isolation boundary: a failed snapshot must not end the timer
                log.exception("broker.snapshot_failed")
            due += self.snapshot_interval
            now = self.clock.time()
            if due <= now:  # fell behind (suspend): skip the missed points
                due = now + self.snapshot_interval


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value

