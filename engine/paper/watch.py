"""The positions on each symbol and their nearest triggers, so a tick crossing none is cheap.

A `Watch` keeps one symbol's positions (one per trader) and the nearest stop-loss, take-profit
and liquidation price of each side; `Watches` keeps one `Watch` per symbol and is told by the
broker's fills whenever a trader's position on a symbol changed.
"""

from __future__ import annotations

import math

from engine.paper.accounts import Position

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

    def has_stops(self) -> bool:
        """Return True when a position here has a stop-loss or take-profit."""
        if self.dirty:
            self.recompute()
        return (self.long_sl > -_INF or self.long_tp < _INF or self.short_sl < _INF
                or self.short_tp > -_INF)


class Watches(dict[str, Watch]):
    """One `Watch` per symbol, kept in step with the accounts' positions."""

    def reindex(self, trader: str, symbol: str, pos: Position | None) -> None:
        """Record that `trader` now holds `pos` on `symbol` (None: no position)."""
        w = self.get(symbol)
        if w is None:
            w = self[symbol] = Watch()
        if pos is None:
            w.entries.pop(trader, None)
        else:
            w.entries[trader] = pos
        w.dirty = True
