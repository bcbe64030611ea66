"""What one fill produces: its events, its log lines, its counters and the trigger index.

`FillEvents.record` turns an `accounts.Fill` into OrderFilled (and PositionOpened/Closed), adds
the fill's latency cost (how far the executable price moved between the cycle's snapshot and
the fill), keeps it among the account's recent fills, counts it, logs it, and tells the
`Watches` that the trader's position on that symbol changed.
"""

from __future__ import annotations

import structlog

from engine import metrics
from engine.events import OrderFilled, PositionClosed, PositionOpened
from engine.paper.accounts import Account, Fill
from engine.paper.watch import Watches

log = structlog.get_logger("broker")


class FillEvents:
    """Turns fills into events and keeps the trigger index in step with them."""

    __slots__ = ("watches",)

    def __init__(self, watches: Watches) -> None:
        self.watches = watches

    def record(self, acc: Account, fill: Fill, reason: str, cycle_id: str | None,
               ref_price: float | None, raw: float, now: float) -> list[object]:
        """Return the events of `fill` on `acc`, filled at `raw` before slippage."""
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
        self.watches.reindex(trader, symbol, acc.positions.get(symbol))
        return events


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
