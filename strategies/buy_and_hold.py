"""Buy and hold: open a long on each weighted symbol once, then never trade again. Pure.

The honest yardstick: an LLM that cannot beat holding the market is not adding anything.
Params (trader `params`): `symbol_weights` {symbol: fraction of equity} and `leverage` (default 1).
A weighted symbol without a position (first cycle, or after a liquidation) is bought at
`weight * equity * leverage * 0.98` notional (2 % left for fees and slippage).
"""

from __future__ import annotations

from typing import Any

from engine.decision import Action, Decision
from engine.settings import Settings, TraderSettings
from strategies.base import DecisionOutcome, TraderContext, register, rule_outcome

FEE_HEADROOM = 0.98


class BuyAndHold:
    """Buys each weighted symbol once and holds it."""

    def __init__(self, name: str, weights: dict[str, float], leverage: int = 1) -> None:
        self.name = name
        self.weights = dict(sorted(weights.items()))
        self.leverage = leverage

    async def decide(self, ctx: TraderContext) -> DecisionOutcome:
        """Buy every weighted symbol that has no open position."""
        return rule_outcome(self.plan(ctx), "buy_and_hold")

    def plan(self, ctx: TraderContext) -> Decision:
        """Return the decision for `ctx` (pure)."""
        held = {p.get("symbol") for p in ctx.positions}
        equity = float(ctx.account.get("equity") or 0.0)
        symbols = getattr(ctx.snapshot, "symbols", {}) or {}
        stale = set(getattr(ctx.snapshot, "stale", ()) or ())
        actions = []
        for symbol, weight in self.weights.items():
            if symbol in held or symbol not in symbols or symbol in stale or weight <= 0:
                continue
            size = round(weight * equity * self.leverage * FEE_HEADROOM, 2)
            if size <= 0:
                continue
            actions.append(Action(symbol=symbol, action="open_long", size_usdt=size,
                                  leverage=self.leverage, confidence=1.0,
                                  reason=f"buy and hold: {weight:.0%} of equity"))
        return Decision(actions=tuple(actions))


@register("buy_and_hold")
def build(trader: TraderSettings, settings: Settings) -> BuyAndHold:
    """Make a buy-and-hold trader from its params (default: the feed's symbols, equal weights)."""
    params: dict[str, Any] = dict(trader.params)
    weights = params.get("symbol_weights") or {
        s: 1 / len(settings.feed.symbols) for s in settings.feed.symbols}
    return BuyAndHold(trader.name, {str(k): float(v) for k, v in weights.items()},
                      int(params.get("leverage", 1)))
