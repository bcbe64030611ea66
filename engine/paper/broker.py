"""The paper broker: the thin shell around accounts and risk that uses the bus, clock and book.

Market orders fill at the book's ask (buys) or bid (sells) moved `slippage_bps` against the
taker, quantity rounded down to the step size and price to the tick (against the taker).
Stop-loss, take-profit, liquidation and funding on live prices are in `engine.paper.triggers`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from engine import metrics
from engine.bus import Bus
from engine.clock import Clock
from engine.decision import Action, Decision
from engine.events import (
    AccountSnapshot,
    DecisionRejected,
    OrderFilled,
    PositionClosed,
    PositionOpened,
)
from engine.paper.accounts import Account, AccountError, AccountState, Fill, Position
from engine.paper.funding import FundingHistory
from engine.paper.leaderboard import BoardStats
from engine.paper.risk import Prices, RiskManager
from engine.paper.rounding import fill_price
from engine.paper.rounding import floor_to_step as _floor
from engine.paper.triggers import MarketTriggers, Watch
from engine.paper.views import AccountViews
from engine.settings import BrokerSettings, LeaderboardSettings, RiskSettings, SymbolFilter

log = structlog.get_logger("broker")


class PaperBroker(MarketTriggers, AccountViews):
    """Paper accounts of every trader, filled and watched on live prices."""

    def __init__(self, settings: BrokerSettings, risk: RiskSettings, bus: Bus, clock: Clock,
                 book: Any, *, snapshot_interval: float = 60.0,
                 symbols: Iterable[str] | None = None,
                 max_price_age: float | None = None,
                 board: LeaderboardSettings | None = None,
                 funding_history: FundingHistory | None = None) -> None:
        self.settings = settings
        # feed.max_price_age_seconds: a decision never fills on a price older than this
        self.max_price_age = max_price_age
        self.board_settings = board or LeaderboardSettings()
        self.funding_history = funding_history  # at start: funding missed while down
        self.board_stats: BoardStats | None = None  # CIs and pairwise of the last cycle
        self.bus = bus
        self.clock = clock
        self.book = book
        self.snapshot_interval = snapshot_interval
        self.symbols = frozenset(symbols) if symbols is not None else None
        self.accounts: dict[str, Account] = {}
        self.risk = RiskManager(risk, settings, self.filter_for)
        self._filters: dict[str, SymbolFilter] = {}
        self._watch: dict[str, Watch] = {}
        self._marks: dict[str, float] = {}
        self._funding: dict[str, tuple[float, float]] = {}  # symbol → (next time, rate)
        self.market_errors = 0

    # ------------------------------------------------------------ set-up

    def filter_for(self, symbol: str) -> SymbolFilter:
        """Return the symbol's filters: exchangeInfo's when set, else the settings'."""
        return self._filters.get(symbol) or self.settings.filter_for(symbol)

    def set_filters(self, filters: Mapping[str, SymbolFilter | Mapping[str, Any]]) -> None:
        """Use these per-symbol filters (e.g. from exchangeInfo) instead of the settings'."""
        for symbol, f in filters.items():
            base = self.settings.filter_for(symbol).model_dump()
            data = f.model_dump() if isinstance(f, SymbolFilter) else dict(f)
            self._filters[symbol] = SymbolFilter(**{**base, **data})

    def open_account(self, trader: str, capital: float) -> None:
        """Open a fresh account for `trader` with `capital` USDT."""
        now = self.clock.time()
        self.accounts[trader] = Account.new(trader, capital, now)
        self.accounts[trader].state.returns.trim(self.board_settings.returns_kept)
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
                                         self.board_settings.returns_kept)
        self.accounts[trader] = acc
        for p in positions:
            self._bracket(acc, p.symbol)  # the brackets in force now
            self._reindex(trader, p.symbol)
        log.info("broker.account_restored", trader=trader, positions=len(positions),
                 cash=round(acc.cash, 2), ledger_gap=round(acc.ledger_gap(), 6))

    # ------------------------------------------------------------ prices

    def _mark(self, symbol: str, fallback: float) -> float:
        mark = self._marks.get(symbol)
        if mark is not None:
            return mark
        q = self.book.quote(symbol)
        price = q.price if q is not None else None
        return price if price else fallback

    def _marks_for(self, acc: Account) -> dict[str, float]:
        return {s: self._mark(s, p.entry_price) for s, p in acc.positions.items()}

    def _prices(self, symbol: str) -> Prices | None:
        q = self.book.quote(symbol)
        if q is None or not (q.bid > 0 and q.ask > 0):
            return None
        return Prices(q.bid, q.ask, q.mark if q.mark > 0 else q.mid)

    def mark_all(self) -> None:
        """Refresh every mark from the book, then each account's peak, drawdown and limits."""
        symbols = {s for acc in self.accounts.values() for s in acc.positions}
        for s in symbols:
            q = self.book.quote(s)
            price = q.price if q is not None else None
            if price:
                self._marks[s] = price
        now = self.clock.time()
        for trader in self.accounts:
            self._check_limits(trader, now, None)

    # ------------------------------------------------------------ the cycle

    def blocked_reason(self, trader: str, now: float) -> str | None:
        """Return the rule keeping `trader` out of this cycle (max_drawdown/daily_loss_limit)."""
        self._check_limits(trader, now, None)
        return self.risk.blocked(self._account(trader), now)

    def review(self, trader: str, decision: Decision, snapshot: Any, now: float,
               cycle_id: str) -> tuple[list[Action], list[DecisionRejected]]:
        """Check every action against the risk rules, cumulatively; return accepted and refused.

        The refusals are returned, not published: the cycle publishes them.
        """
        acc = self._account(trader)
        self._check_limits(trader, now, cycle_id)
        stale = frozenset(getattr(snapshot, "stale", ()) or ())
        wanted = {a.symbol for a in decision.actions} | set(acc.positions)
        prices = {s: self._prices(s) for s in wanted}
        accepted, refusals = self.risk.review(
            acc, decision.actions, symbols=self._known_symbols(snapshot), prices=prices,
            stale=stale, equity=acc.equity(self._marks_for(acc)), now=now)
        rejected = [DecisionRejected(cycle_id, trader, r.symbol, r.action, r.rule, r.detail, now)
                    for r in refusals]
        return accepted, rejected

    def _known_symbols(self, snapshot: Any) -> frozenset[str]:
        if self.symbols is not None:
            return self.symbols
        known = set(self.settings.symbols) | set(self._filters)
        known.update(getattr(snapshot, "symbols", None) or ())
        return frozenset(known)

    def execute(self, trader: str, actions: list[Action], cycle_id: str,
                snapshot: Any) -> list[object]:
        """Fill approved actions at bid/ask + slippage; publish and return the events."""
        acc = self._account(trader)
        now = self.clock.time()
        events: list[object] = []
        changed = False
        for a in actions:
            before = len(events)
            try:
                changed |= self._execute_one(acc, a, cycle_id, snapshot, now, events)
            except AccountError as e:
                changed |= len(events) > before
                metrics.REJECTIONS.labels(trader, e.rule).inc()
                log.info("broker.fill_refused", trader=trader, symbol=a.symbol,
                         action=a.action, rule=e.rule, detail=e.detail)
                events.append(DecisionRejected(cycle_id, trader, a.symbol, str(a.action), e.rule,
                                               e.detail, now))
        if changed:
            events.append(self._after_change(acc, "fill", cycle_id, now))
        self.bus.publish_many(events)
        return events

    def _execute_one(self, acc: Account, a: Action, cycle_id: str, snapshot: Any, now: float,
                     events: list[object]) -> bool:
        symbol = a.symbol
        q = self.book.quote(symbol)
        if q is None or not (q.bid > 0 and q.ask > 0):
            raise AccountError("price_stale", f"no bid/ask for {symbol} at fill time")
        f = self.filter_for(symbol)
        fee_rate, slip = self.settings.taker_fee, self.settings.slippage_bps
        pos = acc.positions.get(symbol)
        if a.action in ("hold", "adjust", "close") and pos is None:
            raise AccountError("no_position", f"no open position on {symbol}")
        if a.action in ("hold", "adjust"):
            if a.stop_loss is None and a.take_profit is None:
                return False
            acc.state.adjustments += 1  # counted on the leaderboard
            pos.stop_loss = a.stop_loss if a.stop_loss is not None else pos.stop_loss  # type: ignore[union-attr]
            pos.take_profit = a.take_profit if a.take_profit is not None else pos.take_profit  # type: ignore[union-attr]
            self._reindex(acc.trader, symbol)
            return True
        self._check_fresh(q, symbol, now)
        if pos is not None and (a.action == "close" or pos.side != _side(a.action)):
            buy = pos.side == "short"
            raw = q.ask if buy else q.bid
            price = fill_price(raw, buy, slip, f.tick_size)
            qty = None
            if a.action == "close" and a.size_usdt is not None:
                qty = _floor(a.size_usdt / price, f.step_size)
                if qty <= 0:
                    raise AccountError("min_notional", f"{a.size_usdt} USDT is under one step")
            fill = acc.close(symbol, qty, price, fee_rate=fee_rate)
            reason = "decision" if a.action == "close" else "flip"
            events += self._fill_events(acc, fill, reason, cycle_id,
                                        _ref_price(snapshot, symbol, buy), raw, now)
            if a.action == "close":
                return True
        side = _side(a.action)
        buy = side == "long"
        raw = q.ask if buy else q.bid
        price = fill_price(raw, buy, slip, f.tick_size)
        qty = _floor((a.size_usdt or 0.0) / price, f.step_size)
        if a.size_usdt is None or qty <= 0 or qty * price < f.min_notional:
            raise AccountError("min_notional", f"{qty * price:.2f} USDT is below the {symbol} "
                               f"minimum of {f.min_notional} USDT at fill time")
        fill = acc.open(symbol, side, qty, price, leverage=a.leverage or 1, fee_rate=fee_rate,
                        mmr=f.maint_margin_rate, now=now, stop_loss=a.stop_loss,
                        take_profit=a.take_profit, reason=a.reason, cycle_id=cycle_id,
                        tiers=f.tiers())
        events += self._fill_events(acc, fill, "decision", cycle_id,
                                    _ref_price(snapshot, symbol, buy), raw, now)
        return True

    def _bracket(self, acc: Account, symbol: str) -> None:
        """Give a restored position its symbol's margin tiers (the one at its mark applies);
        an opened one gets them from `Account.open`, and keeps them through every change."""
        if (pos := acc.positions.get(symbol)) is not None:
            pos.tiers = self.filter_for(symbol).tiers()
            pos.refresh()

    def _check_fresh(self, q: Any, symbol: str, now: float) -> None:
        """Refuse a decision fill on a price older than `max_price_age` at execution time."""
        if self.max_price_age is None:
            return
        age = q.age(now)
        if not age <= self.max_price_age:  # NaN (never received) is stale too
            raise AccountError("price_stale", f"{symbol} price is {age:.1f}s old at fill time "
                               f"(max {self.max_price_age:g}s)")

    def _fill_events(self, acc: Account, fill: Fill, reason: str, cycle_id: str | None,
                     ref_price: float | None, raw: float, now: float) -> list[object]:
        trader, symbol = acc.trader, fill.symbol
        events: list[object] = [OrderFilled(
            trader, symbol, fill.side, fill.qty, fill.price, fill.notional, fill.fee,
            fill.realized_pnl, reason, cycle_id, ref_price, now)]
        if fill.opened is not None:
            p = fill.opened
            events.append(PositionOpened(trader, symbol, p.side, p.qty, p.entry_price, p.leverage,
                                         p.margin, p.stop_loss, p.take_profit,
                                         p.liquidation_price, p.open_reason, cycle_id, now))
        if fill.closed is not None:
            c = fill.closed
            events.append(PositionClosed(trader, symbol, c.side, c.qty, c.entry_price,
                                         c.exit_price, c.realized_pnl, c.fees, reason,  # type: ignore[arg-type]
                                         c.opened_at, cycle_id, now))
        if ref_price is not None:
            # Latency cost: how far the executable price moved against the trader between the
            # cycle's snapshot and the fill (slippage excluded), in USDT.
            sign = 1 if fill.side == "buy" else -1
            acc.state.latency_cost += sign * (raw - ref_price) * fill.qty
        acc.remember_fill({"ts": now, "symbol": symbol, "side": fill.side, "qty": fill.qty,
                           "price": fill.price, "fee": fill.fee,
                           "realized_pnl": fill.realized_pnl, "reason": reason})
        metrics.FILLS.labels(trader, reason).inc()
        _log_fill(fill, trader, reason, cycle_id)
        self._reindex(trader, symbol)
        return events

    def record_decision(self, trader: str, *, valid: bool, holds: bool, cost_usd: float,
                        skipped: bool = False) -> None:
        """Count one decision for the leaderboard: validity, hold, LLM cost (or a cycle it was
        due but not asked: a cool-down or a spend cap, which counts against its coverage)."""
        st = self._account(trader).state
        if skipped:
            st.skipped += 1
            return
        st.decisions += 1
        st.invalid += not valid
        st.holds += bool(holds)
        st.llm_cost += cost_usd

    # ------------------------------------------------------------ snapshots and views

    def _account(self, trader: str) -> Account:
        acc = self.accounts.get(trader)
        if acc is None:
            raise KeyError(f"no account for trader {trader!r}: open_account or restore it first")
        return acc

    def _reindex(self, trader: str, symbol: str) -> None:
        w = self._watch.setdefault(symbol, Watch())
        pos = self.accounts[trader].positions.get(symbol)
        if pos is None:
            w.entries.pop(trader, None)
        else:
            w.entries[trader] = pos
        w.dirty = True

    def _check_limits(self, trader: str, now: float, cycle_id: str | None,
                      equity: float | None = None) -> None:
        acc = self._account(trader)
        if equity is None:
            equity = acc.equity(self._marks_for(acc))
        change = self.risk.update_limits(acc, equity, now)
        if change is not None:
            log.warning("broker.limits", trader=trader, change=change,
                        suspended_until=acc.state.suspended_until, stopped=acc.state.stopped)
            self.bus.publish(self.snapshot(trader, "risk", cycle_id))

    def _after_change(self, acc: Account, cause: str, cycle_id: str | None,
                      now: float) -> AccountSnapshot:
        change = self.risk.update_limits(acc, acc.equity(self._marks_for(acc)), now)
        if change is not None:
            log.warning("broker.limits", trader=acc.trader, change=change,
                        suspended_until=acc.state.suspended_until, stopped=acc.state.stopped)
        return self.snapshot(acc.trader, cause, cycle_id)

    def publish_snapshots(self, cause: str, cycle_id: str | None) -> None:
        """Publish every trader's AccountSnapshot (a cycle snapshot is a Sharpe series point).

        Each account's marks and equity are taken once: the limits, the return and the row."""
        now = self.clock.time()
        for trader, acc in self.accounts.items():
            marks = self._marks_for(acc)
            equity = acc.equity(marks)
            self._check_limits(trader, now, cycle_id, equity)
            if cause == "cycle":  # the same equity and time as the snapshot row: recovery
                acc.state.returns.add(equity, now)  # rebuilds from it
            self.bus.publish(self._snapshot(acc, marks, cause, cycle_id, now))

def _log_fill(fill: Fill, trader: str, reason: str, cycle_id: str | None) -> None:
    """Log one line per fill, and one per position it opened or closed (with its PnL)."""
    log.info("order.filled", trader=trader, symbol=fill.symbol, side=fill.side,
             quantity=fill.qty, price=fill.price, fee=round(fill.fee, 8), reason=reason,
             realized_pnl=round(fill.realized_pnl, 8), cycle_id=cycle_id)
    if fill.opened is not None:
        p = fill.opened
        log.info("position.opened", trader=trader, symbol=fill.symbol, side=p.side,
                 quantity=p.qty, entry_price=p.entry_price, leverage=p.leverage,
                 margin=round(p.margin, 8), stop_loss=p.stop_loss, take_profit=p.take_profit,
                 liquidation_price=p.liquidation_price, cycle_id=cycle_id)
    if fill.closed is not None:
        c = fill.closed
        log.info("position.closed", trader=trader, symbol=fill.symbol, side=c.side,
                 quantity=c.qty, entry_price=c.entry_price, exit_price=c.exit_price,
                 pnl=round(c.realized_pnl, 8), fees=round(c.fees, 8), reason=reason,
                 cycle_id=cycle_id)


def _side(action: str) -> str:
    return "long" if action == "open_long" else "short"


def _ref_price(snapshot: Any, symbol: str, buy: bool) -> float | None:
    """Return the price the decision saw: the snapshot's ask for buys, bid for sells."""
    symbols = getattr(snapshot, "symbols", None)
    entry = symbols.get(symbol) if symbols is not None else None
    if entry is None:
        return None
    for name in ("ask" if buy else "bid", "mark", "last"):
        value = getattr(entry, name, None)
        if isinstance(value, int | float) and value > 0 and math.isfinite(value):
            return float(value)
    return None


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value
