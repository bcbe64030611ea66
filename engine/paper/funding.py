"""Funding that fell due while the engine was down, charged on restart.

Live, funding is settled when a MarkPrice shows a funding time passed (`engine.paper.triggers`).
Funding times that passed while the engine was not running are charged at start from Binance's
funding history (`/fapi/v1/fundingRate`: time, rate, mark price), each once per position (the
account's last settled funding time per symbol guards against charging twice), on the positions
held then. When the history cannot be fetched, `funding.missed` is logged with the symbol and the
time span, and nothing is charged.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from engine.clock import Clock, to_datetime
from engine.settings import FeedSettings

log = structlog.get_logger("broker")

# (symbol, after, until) → [(funding time, rate, mark price or NaN)], oldest first
FundingHistory = Callable[[str, float, float], Awaitable[list[tuple[float, float, float]]]]


def funding_due(accounts: Mapping[str, Any], now: float) -> dict[str, float]:
    """Return, per symbol held, the time after which funding may not have been settled."""
    due: dict[str, float] = {}
    for acc in accounts.values():
        for symbol, pos in acc.positions.items():
            since = max(acc.state.funding_settled.get(symbol, -math.inf), pos.opened_at)
            if since < now:
                due[symbol] = min(due.get(symbol, math.inf), since)
    return due


async def settle_missed_funding(broker: Any, history: FundingHistory, now: float) -> int:
    """Charge every funding time missed before `now`; return how many were settled."""
    settled = 0
    for symbol, since in sorted(funding_due(broker.accounts, now).items()):
        try:
            rows = await history(symbol, since, now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("funding.missed", symbol=symbol, since=to_datetime(since).isoformat(),
                        until=to_datetime(now).isoformat(),
                        error=f"{type(exc).__name__}: {exc}",
                        detail="funding history unreachable: funding times in this span "
                               "were not charged")
            continue
        for when, rate, mark in rows:
            if not since < when <= now:
                continue
            watch = broker._watch.get(symbol)
            if watch is None:
                break
            price = mark if mark > 0 else broker._mark(symbol, math.nan)
            if not price > 0:
                log.warning("funding.missed", symbol=symbol, at=to_datetime(when).isoformat(),
                            error="no mark price for this funding time")
                continue
            broker._settle_funding(watch, symbol, when, rate, price)
            settled += 1
    if settled:
        log.info("funding.caught_up", funding_times=settled)
    return settled


def binance_funding_history(settings: FeedSettings, clock: Clock) -> FundingHistory:
    """Return a `FundingHistory` reading Binance's `/fapi/v1/fundingRate` (one client per call)."""

    async def fetch(symbol: str, after: float, until: float) -> list[tuple[float, float, float]]:
        from engine.market.binance import BinanceRest

        rest = BinanceRest(settings, clock)
        try:
            return await rest.funding_history(symbol, after, until)
        finally:
            await rest.close()

    return fetch
