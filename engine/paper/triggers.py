"""Triggers on live prices: stop-loss, take-profit, liquidation and funding, per symbol.

Every price update is checked for that symbol only: stop-loss and take-profit on each BookTicker
(longs on the bid, shorts on the ask: the price they would close at), liquidation on each
MarkPrice. A per-symbol `Watch` keeps the nearest trigger of each kind, so a tick that crosses
none costs a few comparisons whatever the number of positions. Funding is settled when a
MarkPrice shows its funding time has passed, once per funding time per position.

`MarketTriggers` is the part of `PaperBroker` that reacts to market events and runs as a service
(the trigger watch and the timer snapshots); it uses the broker's accounts, filters, bus and
clock.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import Any

import structlog

from engine.events import BookTicker, FundingPaid, MarkPrice
from engine.paper.accounts import Position
from engine.paper.funding import settle_missed_funding
from engine.paper.rounding import fill_price

log = structlog.get_logger("broker")
_INF = math.inf


class Watch:
    """The positions on one symbol (one per trader) and the nearest trigger of each kind."""

    __slots__ = ("dirty", "entries", "long_liq", "long_sl", "long_tp", "short_liq", "short_sl",
                 "short_tp")

    def __init__(self) -> None:
        self.entries: dict[str, Position] = {}
        self.dirty = True
        self.long_sl = self.short_tp = self.long_liq = -_INF
        self.long_tp = self.short_sl = self.short_liq = _INF

    def recompute(self) -> None:
        """Recompute the nearest triggers after a position on this symbol changed."""
        self.long_sl = self.short_tp = self.long_liq = -_INF
        self.long_tp = self.short_sl = self.short_liq = _INF
        for p in self.entries.values():
            lp = p.liquidation_price
            if p.side == "long":
                if p.stop_loss is not None:
                    self.long_sl = max(self.long_sl, p.stop_loss)
                if p.take_profit is not None:
                    self.long_tp = min(self.long_tp, p.take_profit)
                if lp > 0:
                    self.long_liq = max(self.long_liq, lp)
            else:
                if p.stop_loss is not None:
                    self.short_sl = min(self.short_sl, p.stop_loss)
                if p.take_profit is not None:
                    self.short_tp = max(self.short_tp, p.take_profit)
                if lp > 0:
                    self.short_liq = min(self.short_liq, lp)
        self.dirty = False



class MarketTriggers:
    """The market-event half of the paper broker (mixed into `PaperBroker`)."""

    def on_market(self, event: Any) -> None:
        """Check the triggers of this event's symbol, and settle funding at funding times."""
        if self.gate.halted:
            self._frozen((event,))
            return
        kind = type(event)
        if kind is BookTicker:
            self._on_book(event)
        elif kind is MarkPrice:
            self._on_mark(event)
        # Kline and Ticker24h trigger nothing: stops use the executable bid/ask,
        # liquidation the mark.

    def _on_book(self, e: BookTicker) -> None:
        w = self._watch.get(e.symbol)
        if w is None or not w.entries:
            return
        if w.dirty:
            w.recompute()
        bid, ask = e.bid, e.ask
        if e.symbol not in self._marks and bid > 0 and ask > 0 and not self._has_mark(e.symbol):
            self._check_liquidation(w, e.symbol, (bid + ask) / 2)  # no mark stream (spot)
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
                self._close_on_trigger(trader, p, px, "stop_loss" if stop else "take_profit")

    def book_triggers(self, symbol: str) -> bool:
        """Return True while a BookTicker of `symbol` can trigger anything: a position on it with
        a stop-loss or take-profit, or any position while no mark price was seen (liquidation
        is then checked on the book's mid)."""
        w = self._watch.get(symbol)
        if w is None or not w.entries:
            return False
        if symbol not in self._marks:
            return True
        if w.dirty:
            w.recompute()
        return (w.long_sl > -_INF or w.long_tp < _INF or w.short_sl < _INF
                or w.short_tp > -_INF)

    def _has_mark(self, symbol: str) -> bool:
        q = self.book.quote(symbol)
        return q is not None and q.mark > 0

    def _on_mark(self, e: MarkPrice) -> None:
        symbol = e.symbol
        self._marks[symbol] = e.mark
        prev = self._funding.get(symbol)
        self._funding[symbol] = (e.next_funding_time, e.funding_rate)
        w = self._watch.get(symbol)
        if w is None or not w.entries:
            return
        for when, rate in self._funding_due.pop(symbol, ()):  # passed while halted
            self._settle_funding(w, symbol, when, rate, e.mark)
        if prev is not None and (e.next_funding_time > prev[0] or e.event_time >= prev[0]):
            self._settle_funding(w, symbol, prev[0], prev[1], e.mark)
        if w.dirty:
            w.recompute()
        self._check_liquidation(w, symbol, e.mark)

    def _check_liquidation(self, w: Watch, symbol: str, mark: float) -> None:
        if w.dirty:
            w.recompute()
        if not (mark <= w.long_liq or mark >= w.short_liq):
            return
        for trader, p in list(w.entries.items()):
            if p.liquidated_at(mark):
                self._liquidate(trader, p, mark)

    def _settle_funding(self, w: Watch, symbol: str, when: float, rate: float,
                        mark: float) -> None:
        now = self.clock.time()
        for trader, p in list(w.entries.items()):
            acc = self.accounts[trader]
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
            events.append(self._after_change(acc, "funding", None, now))
            self.bus.publish_many(events)

    def _close_on_trigger(self, trader: str, p: Position, raw: float, reason: str) -> None:
        acc, f, now = self.accounts[trader], self.filter_for(p.symbol), self.clock.time()
        buy = p.side == "short"
        price = fill_price(raw, buy, self.settings.slippage_bps, f.tick_size)
        fill = acc.close(p.symbol, None, price, fee_rate=self.settings.taker_fee)
        log.info(f"broker.{reason}", trader=trader, symbol=p.symbol, side=p.side, trigger=raw,
                 price=price, pnl=round(fill.realized_pnl, 2))
        events = self._fill_events(acc, fill, reason, None, None, raw, now)
        events.append(self._after_change(acc, "fill", None, now))
        self.bus.publish_many(events)

    def _liquidate(self, trader: str, p: Position, mark: float) -> None:
        acc, f, now = self.accounts[trader], self.filter_for(p.symbol), self.clock.time()
        price = fill_price(mark, p.side == "short", self.settings.slippage_bps, f.tick_size)
        fill = acc.liquidate(p.symbol, price)
        log.warning("broker.liquidation", trader=trader, symbol=p.symbol, side=p.side, mark=mark,
                    price=price, liquidation_price=p.liquidation_price,
                    margin_lost=round(-fill.realized_pnl + fill.fee, 2))
        events = self._fill_events(acc, fill, "liquidation", None, None, mark, now)
        events.append(self._after_change(acc, "liquidation", None, now))
        self.bus.publish_many(events)

    # ------------------------------------------------------------ the service

    async def run(self) -> None:
        """Watch every market event for triggers and publish timer snapshots, until cancelled.

        The watch is a bus handler, not a task: the bus hands it what was published at its next
        flush (the loop's next turn; a replay's, right after each record), so a tick costs no
        task wake-up and a replay needs no loop turn per frame for it."""
        sub = self.bus.subscribe("broker", (BookTicker, MarkPrice), capacity=100_000,
                                 policy="block", handler=self._on_events)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._timer(), name="broker.snapshots")
                if self.funding_history is not None:
                    tg.create_task(settle_missed_funding(self, self.funding_history,
                                                         self.clock.time()),
                                   name="broker.missed_funding")
        finally:
            sub.close()

    def _on_events(self, events: Iterable[object]) -> None:
        if self.gate.halted:
            self._frozen(events)
            return
        on_book, on_mark = self._on_book, self._on_mark  # `on_market`, once per batch
        for event in events:
            try:
                kind = type(event)
                if kind is BookTicker:
                    on_book(event)  # type: ignore[arg-type]
                elif kind is MarkPrice:
                    on_mark(event)  # type: ignore[arg-type]
            except Exception:  # one bad event must not stop the trigger watch
                self.market_errors += 1
                log.exception("broker.market_event_failed", kind=type(event).__name__)

    def _frozen(self, events: Iterable[object]) -> None:
        """Trading halted: no trigger fill, no funding; a funding time that passes is kept with
        its rate and applied at the first mark after resuming (the first tick applies stops)."""
        for e in events:
            if type(e) is not MarkPrice:
                continue
            prev = self._funding.get(e.symbol)
            self._marks[e.symbol] = e.mark
            self._funding[e.symbol] = (e.next_funding_time, e.funding_rate)
            w = self._watch.get(e.symbol)
            if prev is not None and w is not None and w.entries and (
                    e.next_funding_time > prev[0] or e.event_time >= prev[0]):
                due = self._funding_due.setdefault(e.symbol, [])
                if prev not in due:
                    due.append(prev)

    async def _timer(self) -> None:
        due = self.clock.time() + self.snapshot_interval
        while True:
            await self.clock.sleep_until(due)
            try:
                if not self.gate.halted:  # frozen accounts: nothing new to record
                    self.publish_snapshots("timer", None)
            except Exception:
                log.exception("broker.snapshot_failed")
            due += self.snapshot_interval
            now = self.clock.time()
            if due <= now:  # fell behind (suspend): skip the missed points
                due = now + self.snapshot_interval
