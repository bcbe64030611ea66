"""Triggers on live prices: stop-loss, take-profit, liquidation and funding, per symbol.

Every price update is checked for that symbol only: stop-loss and take-profit on each BookTicker
(longs on the bid, shorts on the ask: the price they would close at), liquidation on each
MarkPrice. The per-symbol `Watch` keeps the nearest trigger of each kind, so a tick that crosses
none costs a few comparisons whatever the number of positions. Funding is settled when a
MarkPrice shows its funding time has passed, once per funding time per position.

While trading is halted (engine.halt: storage cannot record) the accounts are frozen: no trigger
fill and no funding. A funding time that passes meanwhile is kept with its rate and charged at
the first mark price after resuming; the first book ticker after resuming checks the stops.

`MarketTriggers` is the broker's market-event part: it is handed the ledger, the filters, the
marks, the watches, the fill recorder and the limits it closes positions through.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import structlog

from engine.bus import Bus
from engine.clock import Clock
from engine.events import BookTicker, FundingPaid, MarkPrice
from engine.halt import TradingGate
from engine.paper.accounts import Position
from engine.paper.fills import FillEvents
from engine.paper.ledger import Ledger, SymbolFilters
from engine.paper.limits import Limits
from engine.paper.marks import Marks
from engine.paper.rounding import fill_price
from engine.paper.watch import Watch, Watches
from engine.settings import BrokerSettings

log = structlog.get_logger("broker")
_INF = math.inf

FundingOutcome = Literal["settled", "no_positions", "no_mark"]


def trigger_price(reason: str, p: Position, touched: float) -> float:
    """Return the price a triggered stop-loss or take-profit of `p` closes at, before slippage.

    A take-profit is a limit: it fills at exactly its level, never better, even when the price
    that triggered it (`touched`: the bid for a long, the ask for a short) went beyond it. A
    stop-loss becomes a market order: it fills at its level or at `touched` (the first price at
    or beyond it), whichever is worse for the trader, so a gap through the stop costs the gap.
    """
    if reason == "take_profit" and p.take_profit is not None:
        return p.take_profit
    if reason == "stop_loss" and p.stop_loss is not None:
        return min(p.stop_loss, touched) if p.side == "long" else max(p.stop_loss, touched)
    return touched


class MarketTriggers:
    """Closes, liquidates and charges funding on the positions a market event reaches."""

    __slots__ = ("_funding", "_funding_due", "bus", "clock", "errors", "fills", "filters", "gate",
                 "ledger", "limits", "marks", "settings", "watches")

    def __init__(self, settings: BrokerSettings, ledger: Ledger, filters: SymbolFilters,
                 marks: Marks, watches: Watches, fills: FillEvents, limits: Limits, bus: Bus,
                 clock: Clock, gate: TradingGate | None = None) -> None:
        self.settings, self.ledger, self.filters, self.marks = settings, ledger, filters, marks
        self.watches, self.fills, self.limits = watches, fills, limits
        self.bus, self.clock = bus, clock
        self._funding: dict[str, tuple[float, float]] = {}  # symbol → (next time, rate)
        self.gate = gate or TradingGate()
        # symbol → [(funding time, its rate)] passed while halted, charged at the next mark
        self._funding_due: dict[str, list[tuple[float, float]]] = {}
        self.errors = 0  # market events whose handling raised (counted, logged, skipped)

    def on_market(self, event: object) -> None:
        """Check the triggers of this event's symbol, and settle funding at funding times."""
        if self.gate.halted:
            self._frozen((event,))
            return
        kind = type(event)
        if kind is BookTicker:
            self.on_book(event)  # type: ignore[arg-type]
        elif kind is MarkPrice:
            self.on_mark(event)  # type: ignore[arg-type]
        # Kline and Ticker24h trigger nothing: stops use the executable bid/ask,
        # liquidation the mark.

    def on_events(self, events: Iterable[object]) -> None:
        """Handle a batch of market events; one that raises is counted and skipped."""
        if self.gate.halted:
            self._frozen(events)
            return
        on_book, on_mark = self.on_book, self.on_mark  # `on_market`, once per batch
        watches = self.watches
        for event in events:
            try:
                kind = type(event)
                if kind is BookTicker:
                    w = watches.get(event.symbol)  # type: ignore[attr-defined]
                    if w is not None and w.entries:  # no position on it: nothing to check
                        on_book(event)  # type: ignore[arg-type]
                elif kind is MarkPrice:
                    on_mark(event)  # type: ignore[arg-type]
            except Exception:  # isolation boundary: one bad event must not stop the watch
                self.errors += 1
                log.exception("broker.market_event_failed", kind=type(event).__name__)

    def on_book(self, e: BookTicker) -> None:
        """Close the positions whose stop-loss or take-profit this bid/ask crosses."""
        w = self.watches.get(e.symbol)
        if w is None or not w.entries:
            return
        if w.dirty:
            w.recompute()
        bid, ask = e.bid, e.ask
        if (e.symbol not in self.marks and bid > 0 and ask > 0
                and not self.marks.book_has_mark(e.symbol)):
            self._check_liquidation(w, (bid + ask) / 2, e.recv_time)  # no mark stream (spot)
        if not (bid <= w.long_sl or bid >= w.long_tp or ask >= w.short_sl or ask <= w.short_tp):
            return
        for trader, p in list(w.entries.items()):
            if p.side == "long":
                px, stop = bid, p.stop_loss is not None and bid <= p.stop_loss
                take = p.take_profit is not None and bid >= p.take_profit
            else:
                px, stop = ask, p.stop_loss is not None and ask >= p.stop_loss
                take = p.take_profit is not None and ask <= p.take_profit
            if stop or take:
                reason = "stop_loss" if stop else "take_profit"
                self._close(trader, p, trigger_price(reason, p, px), reason, e.recv_time)

    def book_triggers(self, symbol: str) -> bool:
        """Return True while a BookTicker of `symbol` can trigger anything: a position on it with
        a stop-loss or take-profit, or any position while no mark price was seen (liquidation
        is then checked on the book's mid)."""
        w = self.watches.get(symbol)
        if w is None or not w.entries:
            return False
        if symbol not in self.marks:
            return True
        return w.has_stops()

    def on_mark(self, e: MarkPrice) -> None:
        """Take the mark; settle funding when its time passed; liquidate what it reaches."""
        symbol = e.symbol
        self.marks.set(symbol, e.mark)
        prev = self._funding.get(symbol)
        self._funding[symbol] = (e.next_funding_time, e.funding_rate)
        w = self.watches.get(symbol)
        if w is None or not w.entries:
            return
        for when, rate in self._funding_due.pop(symbol, ()):  # passed while halted
            self._settle(w, symbol, when, rate, e.mark)
        if prev is not None and (e.next_funding_time > prev[0] or e.event_time >= prev[0]):
            self._settle(w, symbol, prev[0], prev[1], e.mark)
        if w.dirty:
            w.recompute()
        self._check_liquidation(w, e.mark, e.recv_time)

    def _frozen(self, events: Iterable[object]) -> None:
        """Trading halted: take the marks, keep each funding time that passes with its rate."""
        for e in events:
            if type(e) is not MarkPrice:
                continue
            prev = self._funding.get(e.symbol)
            self.marks.set(e.symbol, e.mark)
            self._funding[e.symbol] = (e.next_funding_time, e.funding_rate)
            w = self.watches.get(e.symbol)
            if prev is not None and w is not None and w.entries and (
                    e.next_funding_time > prev[0] or e.event_time >= prev[0]):
                due = self._funding_due.setdefault(e.symbol, [])
                if prev not in due:
                    due.append(prev)

    def settle_funding(self, symbol: str, when: float, rate: float,
                       mark: float) -> FundingOutcome:
        """Charge the funding of `when` on `symbol`'s positions at `mark` (the book's if NaN)."""
        watch = self.watches.get(symbol)
        if watch is None:
            return "no_positions"
        price = mark if mark > 0 else self.marks.get(symbol, math.nan)
        if not price > 0:
            return "no_mark"
        self._settle(watch, symbol, when, rate, price)
        return "settled"

    def _check_liquidation(self, w: Watch, mark: float, at: float) -> None:
        if w.dirty:
            w.recompute()
        if not (mark <= w.long_liq or mark >= w.short_liq):
            return
        for trader, p in list(w.entries.items()):
            if p.liquidated_at(mark):
                self._liquidate(trader, p, mark, at)

    def _settle(self, w: Watch, symbol: str, when: float, rate: float, mark: float) -> None:
        now = self.clock.time()
        for trader, p in list(w.entries.items()):
            acc = self.ledger[trader]
            if acc.state.funding_settled.get(symbol, -_INF) >= when:
                continue
            acc.state.funding_settled[symbol] = when
            if p.opened_at >= when:
                continue  # opened after that funding time: nothing due
            notional = p.qty * mark
            amount = acc.apply_funding(symbol, rate, mark)
            w.dirty = True
            log.info("broker.funding", trader=trader, symbol=symbol, rate=rate,
                     amount=round(amount, 6))
            events: list[object] = [FundingPaid(trader, symbol, rate, mark, notional, amount, now)]
            events.append(self.limits.after_change(acc, "funding", None, now))
            self.bus.publish_many(events)

    def _close(self, trader: str, p: Position, raw: float, reason: str, at: float) -> None:
        """Close `p` at `raw` (its `trigger_price`) moved by slippage and impact, taker fee.

        `at` is the receive time of the market event that reached the trigger: the fill's time,
        live as in a replay, whichever loop turn the bus hands the event over in.
        """
        acc, f, now = self.ledger[trader], self.filters.filter_for(p.symbol), at
        buy = p.side == "short"
        price = fill_price(raw, buy, self.settings.slippage_for(p.qty * raw), f.tick_size)
        fill = acc.close(p.symbol, None, price, fee_rate=self.settings.taker_fee)
        log.info(f"broker.{reason}", trader=trader, symbol=p.symbol, side=p.side, trigger=raw,
                 price=price, pnl=round(fill.realized_pnl, 2))
        events = self.fills.record(acc, fill, reason, None, None, raw, now)
        events.append(self.limits.after_change(acc, "fill", None, now))
        self.bus.publish_many(events)

    def _liquidate(self, trader: str, p: Position, mark: float, at: float) -> None:
        acc, f, now = self.ledger[trader], self.filters.filter_for(p.symbol), at
        price = fill_price(mark, p.side == "short", self.settings.slippage_for(p.qty * mark),
                           f.tick_size)
        fill = acc.liquidate(p.symbol, price)
        log.warning("broker.liquidation", trader=trader, symbol=p.symbol, side=p.side, mark=mark,
                    price=price, liquidation_price=p.liquidation_price,
                    margin_lost=round(-fill.realized_pnl + fill.fee, 2))
        events = self.fills.record(acc, fill, "liquidation", None, None, mark, now)
        events.append(self.limits.after_change(acc, "liquidation", None, now))
        self.bus.publish_many(events)

