"""EMA crossover with ATR stops: trade the cross of a fast and a slow EMA. Pure logic.

Per symbol, on the configured timeframe of the snapshot's indicators:
* the fast EMA crosses above the slow one → open long (flipping a short), stop-loss
  `price - atr_stop * ATR14`, take-profit `price + atr_take * ATR14`;
* crosses below → open short, mirrored;
* no cross, but an open position sits against the trend (fast below slow for a long) → close it
  (covers a cross missed across a restart).
A cross needs two observations, so the first cycle only records where the EMAs are.
Params: fast (20), slow (50), atr_stop (2.0), atr_take (4.0), size_pct (20, % of equity notional),
leverage (3), timeframe ("15m"). The EMAs must exist in the snapshot (ema20/ema50).
"""

from __future__ import annotations

from typing import Any, Literal

from engine.decision import Action, Decision
from engine.market.indicators import EMA_PERIODS
from engine.settings import Settings, SettingsError, TraderSettings
from strategies.base import DecisionOutcome, TraderContext, register, rule_outcome

Cross = Literal["up", "down"] | None


def crossing(previous: float | None, current: float) -> Cross:
    """Return the direction in which fast - slow changed sign, if it did."""
    if previous is None:
        return None
    if previous <= 0 < current:
        return "up"
    if previous >= 0 > current:
        return "down"
    return None


class EmaCross:
    """Trades fast/slow EMA crosses with ATR-based stop-loss and take-profit."""

    def __init__(self, name: str, *, fast: int = 20, slow: int = 50, atr_stop: float = 2.0,
                 atr_take: float = 4.0, size_pct: float = 20.0, leverage: int = 3,
                 timeframe: str = "15m") -> None:
        self.name = name
        self.fast, self.slow, self.timeframe = fast, slow, timeframe
        self.atr_stop, self.atr_take = atr_stop, atr_take
        self.size_pct, self.leverage = size_pct, leverage
        self._last_diff: dict[str, float] = {}

    async def decide(self, ctx: TraderContext) -> DecisionOutcome:
        """Act on EMA crosses in `ctx`'s snapshot."""
        return rule_outcome(self.plan(ctx), "ema_cross")

    def plan(self, ctx: TraderContext) -> Decision:
        """Return the decision for `ctx`, remembering each symbol's EMA spread for next time."""
        sides = {p.get("symbol"): p.get("side") for p in ctx.positions}
        equity = float(ctx.account.get("equity") or 0.0)
        stale = set(getattr(ctx.snapshot, "stale", ()) or ())
        actions: list[Action] = []
        for symbol, snap in sorted((getattr(ctx.snapshot, "symbols", {}) or {}).items()):
            if symbol in stale:
                continue
            values = (getattr(snap, "indicators", {}) or {}).get(self.timeframe) or {}
            fast, slow = values.get(f"ema{self.fast}"), values.get(f"ema{self.slow}")
            atr = values.get("atr14")
            price = (getattr(snap, "price", None) or getattr(snap, "mark", None)
                     or getattr(snap, "last", None))
            if fast is None or slow is None or not price:
                continue
            diff = fast - slow
            cross = crossing(self._last_diff.get(symbol), diff)
            self._last_diff[symbol] = diff
            action = self._act(symbol, cross, diff, sides.get(symbol), price, atr, equity)
            if action is not None:
                actions.append(action)
        return Decision(actions=tuple(actions))

    def _act(self, symbol: str, cross: Cross, diff: float, side: Any, price: float,
             atr: float | None, equity: float) -> Action | None:
        if cross == "up" and side != "long":
            return self._open(symbol, "open_long", price, atr, equity, "fast EMA crossed above")
        if cross == "down" and side != "short":
            return self._open(symbol, "open_short", price, atr, equity, "fast EMA crossed below")
        if cross is None and ((side == "long" and diff < 0) or (side == "short" and diff > 0)):
            return Action(symbol=symbol, action="close", confidence=0.6,
                          reason=f"trend turned against the {side}: "
                                 f"ema{self.fast} {'<' if diff < 0 else '>'} ema{self.slow}")
        return None

    def _open(self, symbol: str, kind: Literal["open_long", "open_short"], price: float,
              atr: float | None, equity: float, why: str) -> Action | None:
        size = round(equity * self.size_pct / 100, 2)
        if size <= 0:
            return None
        sign = 1 if kind == "open_long" else -1
        stop = take = None
        if atr:
            stop = price - sign * self.atr_stop * atr
            take = price + sign * self.atr_take * atr
            stop = stop if stop > 0 else None
            take = take if take > 0 else None
        return Action(symbol=symbol, action=kind, size_usdt=size, leverage=self.leverage,
                      stop_loss=stop, take_profit=take, confidence=0.6,
                      reason=f"{why} ema{self.slow} on {self.timeframe}; ATR stop "
                             f"{self.atr_stop}x, take {self.atr_take}x")


@register("ema_cross")
def build(trader: TraderSettings, settings: Settings) -> EmaCross:
    """Make an EMA-cross trader from its params."""
    p: dict[str, Any] = dict(trader.params)
    fast, slow = int(p.get("fast", 20)), int(p.get("slow", 50))
    timeframe = str(p.get("timeframe", "15m"))
    key = f"traders.{trader.name}.params"
    if fast not in EMA_PERIODS or slow not in EMA_PERIODS or fast >= slow:
        raise SettingsError(f"bad value for '{key}': fast={fast}, slow={slow}; expected fast < "
                            f"slow, each one of the snapshot's EMA periods {EMA_PERIODS}")
    if timeframe not in ("1m", *settings.feed.timeframes):
        raise SettingsError(f"bad value for '{key}.timeframe': {timeframe!r}; expected 1m or "
                            f"one of feed.timeframes {settings.feed.timeframes}")
    return EmaCross(trader.name, fast=fast, slow=slow,
                    atr_stop=float(p.get("atr_stop", 2.0)), atr_take=float(p.get("atr_take", 4.0)),
                    size_pct=float(p.get("size_pct", 20.0)), leverage=int(p.get("leverage", 3)),
                    timeframe=timeframe)
