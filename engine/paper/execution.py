"""Filling a trader's approved actions on the book's executable prices.

Market orders fill at the book's ask (buys) or bid (sells) moved `slippage_bps` plus the order
size's market impact (`BrokerSettings.slippage_for`) against the taker, quantity rounded down to
the step size and price to the tick (against the taker). A decision never fills on a price older
than `max_price_age` (feed.max_price_age_seconds). An action the account refuses at fill time
becomes a DecisionRejected; the others their fills.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import structlog

from engine import metrics
from engine.bus import Bus
from engine.clock import Clock
from engine.decision import Action
from engine.events import DecisionRejected
from engine.paper.accounts import Account, AccountError, Position
from engine.paper.fills import FillEvents
from engine.paper.ledger import Ledger, SymbolFilters
from engine.paper.limits import Limits
from engine.paper.marks import QuoteLike, QuoteSource
from engine.paper.rounding import fill_price
from engine.paper.rounding import floor_to_step as _floor
from engine.paper.watch import Watches
from engine.settings import BrokerSettings

log = structlog.get_logger("broker")


class Executor:
    """Fills approved actions and publishes what they did."""

    __slots__ = ("book", "bus", "clock", "fills", "filters", "ledger", "limits",
                 "max_price_age", "settings", "watches")

    def __init__(self, settings: BrokerSettings, ledger: Ledger, filters: SymbolFilters,
                 book: QuoteSource, watches: Watches, fills: FillEvents, limits: Limits,
                 bus: Bus, clock: Clock, max_price_age: float | None) -> None:
        self.settings, self.ledger, self.filters, self.book = settings, ledger, filters, book
        self.watches, self.fills, self.limits = watches, fills, limits
        self.bus, self.clock, self.max_price_age = bus, clock, max_price_age

    def execute(self, trader: str, actions: list[Action], cycle_id: str,
                snapshot: Any) -> list[object]:
        """Fill approved actions at bid/ask + slippage; publish and return the events."""
        acc = self.ledger.account(trader)
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
            events.append(self.limits.after_change(acc, "fill", cycle_id, now))
        self.bus.publish_many(events)
        return events

    def _execute_one(self, acc: Account, a: Action, cycle_id: str, snapshot: Any, now: float,
                     events: list[object]) -> bool:
        symbol = a.symbol
        q = self.book.quote(symbol)
        if q is None or not (q.bid > 0 and q.ask > 0):
            raise AccountError("price_stale", f"no bid/ask for {symbol} at fill time")
        pos = acc.positions.get(symbol)
        if pos is None:
            if a.action in ("hold", "adjust", "close"):
                raise AccountError("no_position", f"no open position on {symbol}")
        elif a.action in ("hold", "adjust"):
            return self._adjust(acc, pos, a)
        self._check_fresh(q, symbol, now)
        if pos is not None and (a.action == "close" or pos.side != _side(a.action)):
            events += self._close(acc, pos, a, q, cycle_id, snapshot, now)
            if a.action == "close":
                return True
        events += self._open(acc, a, q, cycle_id, snapshot, now)
        return True

    def _adjust(self, acc: Account, pos: Position, a: Action) -> bool:
        """Move a position's stop-loss and take-profit; return whether anything changed."""
        if a.stop_loss is None and a.take_profit is None:
            return False
        acc.state.adjustments += 1  # counted on the leaderboard
        pos.stop_loss = a.stop_loss if a.stop_loss is not None else pos.stop_loss
        pos.take_profit = a.take_profit if a.take_profit is not None else pos.take_profit
        self.watches.reindex(acc.trader, a.symbol, pos)
        return True

    def _close(self, acc: Account, pos: Position, a: Action, q: QuoteLike, cycle_id: str,
               snapshot: Any, now: float) -> list[object]:
        """Close `pos` (all of it, or `size_usdt` of a close): on a close or before a flip."""
        f = self.filters.filter_for(a.symbol)
        buy = pos.side == "short"
        raw = q.ask if buy else q.bid
        price = fill_price(raw, buy, self.settings.slippage_for(pos.qty * raw), f.tick_size)
        qty = None
        if a.action == "close" and a.size_usdt is not None:
            qty = _floor(a.size_usdt / price, f.step_size)
            if qty <= 0:
                raise AccountError("min_notional", f"{a.size_usdt} USDT is under one step")
        fill = acc.close(a.symbol, qty, price, fee_rate=self.settings.taker_fee)
        reason = "decision" if a.action == "close" else "flip"
        return self.fills.record(acc, fill, reason, cycle_id, _ref_price(snapshot, a.symbol, buy),
                                 raw, now)

    def _open(self, acc: Account, a: Action, q: QuoteLike, cycle_id: str, snapshot: Any,
              now: float) -> list[object]:
        """Open (or add to) a position of `size_usdt` on the action's side."""
        symbol, f = a.symbol, self.filters.filter_for(a.symbol)
        side = _side(a.action)
        buy = side == "long"
        raw = q.ask if buy else q.bid
        price = fill_price(raw, buy, self.settings.slippage_for(a.size_usdt or 0.0), f.tick_size)
        qty = _floor((a.size_usdt or 0.0) / price, f.step_size)
        if a.size_usdt is None or qty <= 0 or qty * price < f.min_notional:
            raise AccountError("min_notional", f"{qty * price:.2f} USDT is below the {symbol} "
                               f"minimum of {f.min_notional} USDT at fill time")
        fill = acc.open(symbol, side, qty, price, leverage=a.leverage or 1,
                        fee_rate=self.settings.taker_fee, mmr=f.maint_margin_rate, now=now,
                        stop_loss=a.stop_loss, take_profit=a.take_profit, reason=a.reason,
                        cycle_id=cycle_id, tiers=f.tiers())
        return self.fills.record(acc, fill, "decision", cycle_id,
                                 _ref_price(snapshot, symbol, buy), raw, now)

    def _check_fresh(self, q: QuoteLike, symbol: str, now: float) -> None:
        """Refuse a decision fill on a price older than `max_price_age` at execution time."""
        if self.max_price_age is None:
            return
        age = q.age(now)
        if not age <= self.max_price_age:  # NaN (never received) is stale too
            raise AccountError("price_stale", f"{symbol} price is {age:.1f}s old at fill time "
                               f"(max {self.max_price_age:g}s)")


def _side(action: str) -> Literal["long", "short"]:
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
