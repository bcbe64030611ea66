"""The random trader: the null a model must beat. Seeded, pure, within the same risk rules.

Each cycle, per symbol, it draws one action from a configurable mix. An open draws a notional
between `size_pct` bounds (% of equity, never above `risk.max_position_pct`) and a leverage
between 1 and `max_leverage` (never above `risk.max_leverage`); a close closes the whole
position; an open on a held position of the same side, or a close with nothing held, is a hold.
The draws come from a generator seeded with (`seed`, trader name, cycle instant), so one market
replayed twice gives the same decisions, and a resumed arena draws as an uninterrupted one would.

Params (trader `params`, all optional): `seed` (0); `mix` {action: weight} over open_long,
open_short, close and hold (default 0.05 / 0.05 / 0.05 / 0.85); `size_pct` [low, high]
(default [5, 20]); `max_leverage` (3); `symbols` (default: the feed's symbols).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from typing import Any

from engine.decision import Action, Decision
from engine.settings import Settings, SettingsError, TraderSettings
from strategies.base import DecisionOutcome, TraderContext, register, rule_outcome

DEFAULT_MIX: dict[str, float] = {"open_long": 0.05, "open_short": 0.05, "close": 0.05,
                                  "hold": 0.85}
MIX_ACTIONS = frozenset(DEFAULT_MIX)
PARAMS = frozenset({"seed", "mix", "size_pct", "max_leverage", "symbols"})


class RandomTrader:
    """Opens and closes at random, sized and levered within the risk limits."""

    def __init__(self, name: str, *, symbols: Sequence[str], seed: int = 0,
                 mix: Mapping[str, float] | None = None,
                 size_pct: tuple[float, float] = (5.0, 20.0), max_leverage: int = 3) -> None:
        self.name = name
        self.symbols = tuple(sorted(symbols))
        self.seed = seed
        weights = dict(DEFAULT_MIX if mix is None else mix)
        self.kinds = tuple(sorted(weights))
        self.weights = tuple(weights[k] for k in self.kinds)
        self.size_pct = size_pct
        self.max_leverage = max_leverage

    async def decide(self, ctx: TraderContext) -> DecisionOutcome:
        """Draw this cycle's actions."""
        return rule_outcome(self.plan(ctx), "random")

    def rng(self, now: float) -> random.Random:
        """Return the generator of the cycle at `now` (the same for the same seed and instant)."""
        key = f"{self.seed}:{self.name}:{round(now * 1000)}".encode()
        return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))

    def plan(self, ctx: TraderContext) -> Decision:
        """Return the decision for `ctx` (pure: the same context gives the same decision)."""
        rng = self.rng(ctx.now)
        sides = {p.get("symbol"): p.get("side") for p in ctx.positions}
        equity = float(ctx.account.get("equity") or 0.0)
        symbols = getattr(ctx.snapshot, "symbols", {}) or {}
        stale = set(getattr(ctx.snapshot, "stale", ()) or ())
        low, high = self.size_pct
        high = min(high, ctx.risk.max_position_pct)
        low = min(low, high)
        top = max(1, min(self.max_leverage, ctx.risk.max_leverage))
        actions: list[Action] = []
        for symbol in self.symbols:
            # Every draw happens whatever the state, so one symbol's state never shifts another's.
            kind = rng.choices(self.kinds, self.weights)[0]
            pct, leverage = rng.uniform(low, high), rng.randint(1, top)
            if symbol not in symbols or symbol in stale:
                continue
            held = sides.get(symbol)
            if kind == "close" and held is not None:
                actions.append(Action(symbol=symbol, action="close", confidence=0.5,
                                      reason="random: close"))
            elif kind in ("open_long", "open_short") and held != kind.removeprefix("open_"):
                size = round(equity * pct / 100, 2)
                if size > 0:
                    actions.append(Action(symbol=symbol, action=kind,
                                          size_usdt=size, leverage=leverage, confidence=0.5,
                                          reason=f"random: {pct:.1f}% of equity at {leverage}x"))
        return Decision(actions=tuple(actions))


def _mix(trader: str, value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise SettingsError(f"trader {trader!r}: params.mix must be a table of action weights")
    unknown = sorted(set(value) - MIX_ACTIONS)
    if unknown:
        raise SettingsError(f"trader {trader!r}: params.mix has unknown action "
                            f"{', '.join(unknown)}; expected {', '.join(sorted(MIX_ACTIONS))}")
    try:
        weights = {str(k): float(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise SettingsError(f"trader {trader!r}: params.mix weights must be numbers") from None
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise SettingsError(f"trader {trader!r}: params.mix weights must be >= 0, some > 0")
    return weights


@register("random")
def build(trader: TraderSettings, settings: Settings) -> RandomTrader:
    """Make a random trader from its params, refusing bad ones with a settings error."""
    params: dict[str, Any] = dict(trader.params)
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise SettingsError(f"trader {trader.name!r}: unknown random params "
                            f"{', '.join(unknown)}; expected {', '.join(sorted(PARAMS))}")
    try:
        low, high = (float(x) for x in params.get("size_pct", (5.0, 20.0)))
        seed, top = int(params.get("seed", 0)), int(params.get("max_leverage", 3))
    except (TypeError, ValueError):
        raise SettingsError(f"trader {trader.name!r}: random params size_pct = [low, high], "
                            "seed and max_leverage integers") from None
    if not 0 < low <= high or top < 1:
        raise SettingsError(f"trader {trader.name!r}: random size_pct needs 0 < low <= high "
                            "and max_leverage >= 1")
    symbols = params.get("symbols") or settings.feed.symbols
    mix = _mix(trader.name, params["mix"]) if "mix" in params else None
    return RandomTrader(trader.name, symbols=[str(s) for s in symbols], seed=seed, mix=mix,
                        size_pct=(low, high), max_leverage=top)
