"""The paper broker: the thin shell around accounts and risk that uses the bus, clock and book.

Market orders fill at the book's ask (buys) or bid (sells) moved `slippage_bps` against the
taker, quantity rounded down to the step size and price to the tick (against the taker).
Every price update is checked for that symbol only: stop-loss and take-profit on each BookTicker
(longs on the bid, shorts on the ask: the price they would close at), liquidation on each
MarkPrice. A per-symbol watch keeps the nearest trigger of each kind, so a tick that crosses
none costs a few comparisons whatever the number of positions. Funding is settled when a
MarkPrice shows its funding time has passed, once per funding time per position.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from engine import metrics
from engine.accounts import Account, AccountError, AccountState, Fill, Position, fill_price
from engine.accounts import floor_to_step as _floor
from engine.bus import Bus
from engine.clock import Clock
from engine.decision import Action, Decision
from engine.events import (
    AccountSnapshot,
    BookTicker,
    DecisionRejected,
    FundingPaid,
    Kline,
    Leaderboard,
    MarkPrice,
    OrderFilled,
    PositionClosed,
    PositionOpened,
)
from engine.leaderboard import build_rows
from engine.risk import Prices, RiskManager
from engine.settings import BrokerSettings, RiskSettings, SymbolFilter

log = structlog.get_logger("broker")
_INF = math.inf


class _Watch:
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


class PaperBroker:
    """Paper accounts of every trader, filled and watched on live prices."""

    def __init__(self, settings: BrokerSettings, risk: RiskSettings, bus: Bus, clock: Clock,
                 book: Any, *, snapshot_interval: float = 60.0,
                 symbols: Iterable[str] | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self.clock = clock
        self.book = book
        self.snapshot_interval = snapshot_interval
        self.symbols = frozenset(symbols) if symbols is not None else None
        self.accounts: dict[str, Account] = {}
        self.risk = RiskManager(risk, settings, self.filter_for)
        self._filters: dict[str, SymbolFilter] = {}
        self._watch: dict[str, _Watch] = {}
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
        self.accounts[trader] = acc
        for p in positions:
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

    # ------------------------------------------------------------ market events (hot path)

    def on_market(self, event: Any) -> None:
        """Check the triggers of this event's symbol, and settle funding at funding times."""
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
        if prev is not None and (e.next_funding_time > prev[0] or e.event_time >= prev[0]):
            self._settle_funding(w, symbol, prev[0], prev[1], e.mark)
        if w.dirty:
            w.recompute()
        self._check_liquidation(w, symbol, e.mark)

    def _check_liquidation(self, w: _Watch, symbol: str, mark: float) -> None:
        if w.dirty:
            w.recompute()
        if not (mark <= w.long_liq or mark >= w.short_liq):
            return
        for trader, p in list(w.entries.items()):
            if p.liquidated_at(mark):
                self._liquidate(trader, p, mark)

    def _settle_funding(self, w: _Watch, symbol: str, when: float, rate: float,
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
                metrics.REJECTIONS.labels(e.rule).inc()
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
        if a.action in ("hold", "close") and pos is None:
            raise AccountError("no_position", f"no open position on {symbol}")
        if a.action == "hold":
            if a.stop_loss is None and a.take_profit is None:
                return False
            pos.stop_loss = a.stop_loss if a.stop_loss is not None else pos.stop_loss  # type: ignore[union-attr]
            pos.take_profit = a.take_profit if a.take_profit is not None else pos.take_profit  # type: ignore[union-attr]
            self._reindex(acc.trader, symbol)
            return True
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
                        take_profit=a.take_profit, reason=a.reason, cycle_id=cycle_id)
        events += self._fill_events(acc, fill, "decision", cycle_id,
                                    _ref_price(snapshot, symbol, buy), raw, now)
        return True

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
        self._reindex(trader, symbol)
        return events

    def record_decision(self, trader: str, *, valid: bool, holds: bool, cost_usd: float) -> None:
        """Count one decision for the leaderboard: validity, hold, LLM cost."""
        st = self._account(trader).state
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
        w = self._watch.setdefault(symbol, _Watch())
        pos = self.accounts[trader].positions.get(symbol)
        if pos is None:
            w.entries.pop(trader, None)
        else:
            w.entries[trader] = pos
        w.dirty = True

    def _check_limits(self, trader: str, now: float, cycle_id: str | None) -> None:
        acc = self._account(trader)
        change = self.risk.update_limits(acc, acc.equity(self._marks_for(acc)), now)
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

    def snapshot(self, trader: str, cause: str, cycle_id: str | None) -> AccountSnapshot:
        """Return `trader`'s whole account now: money, full positions, baselines and counters."""
        acc = self._account(trader)
        marks = self._marks_for(acc)
        upnl = acc.unrealized(marks)
        equity = acc.cash + acc.margin() + upnl
        acc.observe_equity(equity)
        st = acc.state
        metrics.EQUITY.labels(trader).set(equity)
        positions = tuple(
            {**p.to_dict(), "mark": marks[s], "unrealized_pnl": p.unrealized(marks[s])}
            for s, p in acc.positions.items())
        return AccountSnapshot(
            trader=trader, cash=acc.cash, margin=acc.margin(), unrealized_pnl=upnl, equity=equity,
            realized_pnl=acc.realized_pnl, fees=acc.fees, funding=acc.funding,
            peak_equity=st.peak_equity,
            drawdown_pct=(st.peak_equity - equity) / st.peak_equity * 100
            if st.peak_equity else 0.0,
            return_pct=(equity - acc.capital) / acc.capital * 100,
            positions=positions, state={"capital": acc.capital, **st.to_dict()},
            cause=cause, cycle_id=cycle_id, ts=self.clock.time())

    def publish_snapshots(self, cause: str, cycle_id: str | None) -> None:
        """Publish every trader's AccountSnapshot (a cycle snapshot is a Sharpe series point)."""
        now = self.clock.time()
        for trader, acc in self.accounts.items():
            self._check_limits(trader, now, cycle_id)
            if cause == "cycle":
                acc.state.returns.add(acc.equity(self._marks_for(acc)), now)
            self.bus.publish(self.snapshot(trader, cause, cycle_id))

    def account_view(self, trader: str) -> dict[str, Any]:
        """Return the account as the trader's prompt shows it."""
        acc = self._account(trader)
        marks = self._marks_for(acc)
        equity = acc.equity(marks)
        st = acc.state
        exposure = acc.exposure(marks)
        return {
            "capital": acc.capital, "cash": round(acc.cash, 2),
            "available": round(acc.cash, 2), "margin_used": round(acc.margin(), 2),
            "unrealized_pnl": round(acc.unrealized(marks), 2), "equity": round(equity, 2),
            "realized_pnl": round(acc.realized_pnl, 2), "fees": round(acc.fees, 2),
            "funding": round(acc.funding, 2),
            "return_pct": round((equity - acc.capital) / acc.capital * 100, 3),
            "peak_equity": round(st.peak_equity, 2),
            "drawdown_pct": round(max(0.0, (st.peak_equity - equity) / st.peak_equity * 100), 3)
            if st.peak_equity else 0.0,
            "exposure": round(exposure, 2),
            "exposure_pct": round(exposure / equity * 100, 2) if equity > 0 else None,
            "open_positions": len(acc.positions), "trades": st.trades, "wins": st.wins,
            "suspended_until": st.suspended_until, "stopped": st.stopped,
        }

    def positions_view(self, trader: str) -> tuple[dict[str, Any], ...]:
        """Return each open position as the trader's prompt shows it."""
        acc = self._account(trader)
        out = []
        for s, p in acc.positions.items():
            mark = self._mark(s, p.entry_price)
            upnl = p.unrealized(mark)
            out.append({
                "symbol": s, "side": p.side, "qty": p.qty, "entry_price": p.entry_price,
                "mark": mark, "leverage": p.leverage, "margin": round(p.margin, 2),
                "notional": round(p.notional(mark), 2), "unrealized_pnl": round(upnl, 2),
                "roe_pct": round(upnl / p.margin * 100, 2) if p.margin > 0 else None,
                "stop_loss": p.stop_loss, "take_profit": p.take_profit,
                "liquidation_price": p.liquidation_price, "open_reason": p.open_reason,
                "opened_at": p.opened_at, "fees": round(p.fees, 4), "funding": round(p.funding, 4),
            })
        return tuple(out)

    def recent_fills(self, trader: str, n: int) -> tuple[dict[str, Any], ...]:
        """Return the trader's last `n` fills, oldest first."""
        fills = self._account(trader).state.recent_fills
        return tuple(dict(f) for f in fills[-n:]) if n > 0 else ()

    def leaderboard(self, cycle_id: str | None, *, publish: bool = True) -> Leaderboard:
        """Return the leaderboard; when `publish`, also publish it and log it as `leaderboard`."""
        marks = {s: self._mark(s, p.entry_price)
                 for acc in self.accounts.values() for s, p in acc.positions.items()}
        now = self.clock.time()
        board = Leaderboard(cycle_id, build_rows(self.accounts.values(), marks, now), now)
        if publish:
            self.bus.publish(board)
            log.info("leaderboard", cycle_id=cycle_id, rows=list(board.rows))
        return board

    # ------------------------------------------------------------ the service

    async def run(self) -> None:
        """Watch every market event for triggers and publish timer snapshots, until cancelled."""
        sub = self.bus.subscribe("broker", (BookTicker, MarkPrice, Kline), capacity=100_000,
                                 policy="block")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._consume(sub), name="broker.triggers")
                tg.create_task(self._timer(), name="broker.snapshots")
        finally:
            sub.close()

    async def _consume(self, sub: Any) -> None:
        while True:
            for event in await sub.get_batch(1000):
                try:
                    self.on_market(event)
                except Exception:  # one bad event must not stop the trigger watch
                    self.market_errors += 1
                    log.exception("broker.market_event_failed", kind=type(event).__name__)

    async def _timer(self) -> None:
        due = self.clock.time() + self.snapshot_interval
        while True:
            await self.clock.sleep_until(due)
            try:
                self.publish_snapshots("timer", None)
            except Exception:
                log.exception("broker.snapshot_failed")
            due += self.snapshot_interval
            now = self.clock.time()
            if due <= now:  # fell behind (suspend): skip the missed points
                due = now + self.snapshot_interval


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
