"""Settings of the paper broker (`[broker]`, its symbol filters and margin brackets) and of the
leaderboard's statistics (`[leaderboard]`).

Kept apart from engine.settings as one subject of their own; `Settings` has one field for each,
and every section builds on `engine.settings_base.Section`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from engine.settings_base import PositiveFloat, Section


class MarginBracket(Section):
    """One tier of Binance's leverage brackets: positions with notional up to `notional_cap`."""

    notional_cap: PositiveFloat
    rate: Annotated[float, Field(gt=0, lt=1)]  # maintenance margin rate
    # Binance's "cum": maintenance margin = notional x rate - maint_amount. Left out, it is
    # derived from the tiers below: cum_i = cum_(i-1) + cap_(i-1) x (rate_i - rate_(i-1)).
    maint_amount: Annotated[float, Field(ge=0)] | None = None


class SymbolFilter(Section):
    step_size: PositiveFloat = 0.001
    tick_size: PositiveFloat = 0.01
    min_notional: Annotated[float, Field(ge=0)] = 5.0
    maint_margin_rate: Annotated[float, Field(gt=0, lt=1)] = 0.004  # used without brackets
    brackets: tuple[MarginBracket, ...] = ()

    @field_validator("brackets")
    @classmethod
    def _ascending(cls, v: tuple[MarginBracket, ...]) -> tuple[MarginBracket, ...]:
        caps, rates = [b.notional_cap for b in v], [b.rate for b in v]
        if caps != sorted(set(caps)) or rates != sorted(rates):
            raise ValueError("brackets must have strictly ascending notional_cap and "
                             "ascending rate")
        out, cum, prev = [], 0.0, None
        for b in v:
            if prev is not None:
                cum += prev.notional_cap * (b.rate - prev.rate)
            # Binance's amounts make maintenance margin continuous across tiers, which the
            # liquidation price relies on; a mistyped one is refused.
            if b.maint_amount is not None and abs(b.maint_amount - cum) > 0.01:
                raise ValueError(f"maint_amount {b.maint_amount:g} of the tier up to "
                                 f"{b.notional_cap:g} breaks Binance's formula ({cum:g})")
            out.append(b.model_copy(update={"maint_amount": round(cum, 8)}))
            prev = b
        return tuple(out)

    def tiers(self) -> tuple[tuple[float, float], ...]:
        """Return every tier's (rate, maintenance amount); one tier without brackets."""
        return (tuple((b.rate, b.maint_amount or 0.0) for b in self.brackets)
                or ((self.maint_margin_rate, 0.0),))


class BrokerSettings(Section):
    taker_fee: Annotated[float, Field(ge=0, lt=0.1)] = 0.0005
    slippage_bps: Annotated[float, Field(ge=0, le=1000)] = 1.0
    # Market impact on top of slippage_bps: an order of `impact_notional` USDT pays `impact_bps`
    # more, growing with the square root of its notional (0 = no impact).
    impact_bps: Annotated[float, Field(ge=0, le=1000)] = 0.0
    impact_notional: PositiveFloat = 100_000.0
    use_exchange_info: bool = False
    symbols: dict[str, SymbolFilter] = Field(default_factory=dict)
    default_filter: SymbolFilter = SymbolFilter()

    def filter_for(self, symbol: str) -> SymbolFilter:
        """Return the filter of `symbol`, or the default one."""
        return self.symbols.get(symbol, self.default_filter)

    def slippage_for(self, notional: float) -> float:
        """Return the slippage in bps of a market order of `notional` USDT: the fixed bps plus
        the impact term, impact_bps x sqrt(notional / impact_notional)."""
        if self.impact_bps <= 0 or not notional > 0:
            return self.slippage_bps
        return float(self.slippage_bps + self.impact_bps * (notional / self.impact_notional) ** 0.5)


class LeaderboardSettings(Section):
    """The leaderboard's statistics (engine.paper.stats)."""

    min_returns: Annotated[int, Field(ge=2)] = 30  # Sharpe, Sortino, CIs: "-" before this
    returns_kept: Annotated[int, Field(ge=10, le=100_000)] = 2016  # per account, for the CIs
    bootstrap_samples: Annotated[int, Field(ge=100, le=100_000)] = 1000
    ci_level: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    # share of its cycles a trader must have decided validly to be ranked (else ranked apart)
    min_coverage: Annotated[float, Field(ge=0, le=1)] = 0.95
    beats_p: Annotated[float, Field(gt=0.5, lt=1)] = 0.95  # P(A beats B) that outranks B
