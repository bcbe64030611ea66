"""Exchange rounding: quantities to the step, prices to the tick, market fills with slippage."""

from __future__ import annotations

import math
from decimal import Decimal
from functools import lru_cache


@lru_cache(maxsize=256)
def _decimals(step: float) -> int:
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    return max(0, -int(exponent))


def floor_to_step(value: float, step: float) -> float:
    """Round `value` down to a multiple of `step` (quantities: never more than asked)."""
    n = math.floor(value / step + 1e-9)
    return round(n * step, _decimals(step))


def ceil_to_step(value: float, step: float) -> float:
    """Round `value` up to a multiple of `step`."""
    n = math.ceil(value / step - 1e-9)
    return round(n * step, _decimals(step))


def fill_price(raw: float, buy: bool, slippage_bps: float, tick: float) -> float:
    """Return the fill price of a market order: `raw` moved against the taker, then to the tick."""
    if buy:
        return ceil_to_step(raw * (1 + slippage_bps / 10_000), tick)
    return max(tick, floor_to_step(raw * (1 - slippage_bps / 10_000), tick))
