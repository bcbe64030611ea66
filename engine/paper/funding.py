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
from typing import Literal, Protocol

import structlog

from engine.clock import Clock, to_datetime
from engine.paper.accounts import Account
from engine.settings import FeedSettings

log = structlog.get_logger("broker")

# (symbol, after, until) → [(funding time, rate, mark price or NaN)], oldest first
FundingHistory = Callable[[str, float, float], Awaitable[list[tuple[float, float, float]]]]


def funding_due(accounts: Mapping[str, Account], now: float) -> dict[str, float]:
    """Return, per symbol held, the time after which funding may not have been settled."""
    due: dict[str, float] = {}
    for acc in accounts.values():
        for symbol, pos in acc.positions.items():
            since = max(acc.state.funding_settled.get(symbol, -math.inf), pos.opened_at)
            if since < now:
                due[symbol] = min(due.get(symbol, math.inf), since)
    return due


class FundingTarget(Protocol):
    """What settling missed funding needs: the accounts, and a way to charge one funding time."""

    @property
    def accounts(self) -> Mapping[str, Account]: ...

    def settle_funding(self, symbol: str, when: float, rate: float,
                       mark: float) -> Literal["settled", "no_positions", "no_mark"]: ...


async def settle_missed_funding(target: FundingTarget, history: FundingHistory,
                                now: float) -> int:
    """Charge every funding time missed before `now`; return how many were settled."""
    settled = 0
    for symbol, since in sorted(funding_due(target.accounts, now).items()):
        try:
            rows = await history(symbol, since, now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # isolation boundary: any failure of the history is logged
            log.warning("funding.missed", symbol=symbol, since=to_datetime(since).isoformat(),
                        until=to_datetime(now).isoformat(),
                        error=f"{type(exc).__name__}: {exc}",
                        detail="funding history unreachable: funding times in this span "
                               "were not charged")
            continue
        for when, rate, mark in rows:
            if not since < when <= now:
                continue
            outcome = target.settle_funding(symbol, when, rate, mark)
            if outcome == "no_positions":
                break
            if outcome == "no_mark":
                log.warning("funding.missed", symbol=symbol, at=to_datetime(when).isoformat(),
                            error="no mark price for this funding time")
                continue
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
