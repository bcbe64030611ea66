"""Every event the engine publishes: small, frozen, slotted dataclasses, never mutated.

Market events (`BookTicker`, `Kline`, `MarkPrice`, `Ticker24h`) are the hot path and carry no id.
Every event that becomes a database row carries `id`, made when the event is created, so a retried
batch can never insert a row twice. Times are epoch seconds (float, UTC) from the engine's clock.
Money is in USDT as float; amounts are rounded to the cent where they reconcile.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

_counter = itertools.count()
_node = int.from_bytes(os.urandom(4), "big")


def new_id() -> uuid.UUID:
    """Return a new time-ordered id (UUIDv7 layout), unique in this process and across runs."""
    # Real wall time, not the engine clock: ids must stay unique and ordered even in a replay.
    ms = time.time_ns() // 1_000_000
    seq = next(_counter) & 0x3FFF_FFFF_FFFF
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version 7
    value |= ((seq >> 34) & 0xFFF) << 64
    value |= 0b10 << 62  # RFC 4122 variant
    value |= (seq & 0x3_FFFF_FFFF) << 28
    value |= _node & 0xFFF_FFFF
    return uuid.UUID(int=value)


# ---------------------------------------------------------------- market data (hot path)


@dataclass(frozen=True, slots=True)
class BookTicker:
    """Best bid/ask for a symbol (Binance `bookTicker`)."""

    symbol: str
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float
    event_time: float  # exchange time (E, or T on futures), epoch seconds
    recv_time: float  # local receive time, epoch seconds


@dataclass(frozen=True, slots=True)
class Kline:
    """A 1-minute candle update (Binance `kline_1m`); `closed` marks the final update."""

    symbol: str
    interval: str
    open_time: float
    close_time: float
    open: float
    high: float
    low: float
    close: float
    volume: float
    closed: bool
    event_time: float
    recv_time: float


@dataclass(frozen=True, slots=True)
class MarkPrice:
    """Mark price and funding (Binance futures `markPrice@1s`)."""

    symbol: str
    mark: float
    index: float
    funding_rate: float
    next_funding_time: float
    event_time: float
    recv_time: float


@dataclass(frozen=True, slots=True)
class Ticker24h:
    """Rolling 24 h statistics (Binance `ticker`)."""

    symbol: str
    last: float
    change_pct: float
    high: float
    low: float
    volume: float
    quote_volume: float
    event_time: float
    recv_time: float


MarketEvent = BookTicker | Kline | MarkPrice | Ticker24h


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """The feed connected, disconnected or backfilled a gap."""

    state: Literal["connected", "disconnected", "backfilled"]
    ts: float
    detail: str = ""
    gap_seconds: float = 0.0


# ---------------------------------------------------------------- engine lifecycle and jobs


@dataclass(frozen=True, slots=True)
class RunStarted:
    """The engine started: one row in `runs`."""

    run_id: uuid.UUID
    started_at: float
    version: str
    settings_hash: str
    fresh: bool
    dry_run: bool
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class JobRun:
    """One job execution, or one skipped fire, as the seeds' job registry."""

    job: str
    trigger: Literal["schedule", "manual", "once"]
    started_at: float
    finished_at: float
    status: Literal["ok", "failed", "timeout", "skipped", "cancelled"]
    error: str | None = None
    summary: dict[str, Any] | None = None
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class CycleFinished:
    """A trading cycle ended (or was skipped); carries the exact snapshot the traders saw."""

    cycle_id: str
    trigger: str
    started_at: float
    finished_at: float
    status: Literal["ok", "failed", "skipped", "cancelled"]
    skip_reason: str | None
    summary: dict[str, Any]
    snapshot: dict[str, Any] | None
    id: uuid.UUID = field(default_factory=new_id)


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class DecisionMade:
    """One trader's answer in one cycle, valid or not, with its cost.

    `decision` is the parsed decision as JSON-able dict (`{"actions": [...]}`), or the hold it
    became when the answer was invalid; `error` says exactly why it was invalid.
    """

    cycle_id: str
    trader: str
    provider: str
    model: str
    prompt_hash: str
    raw_answer: str
    decision: dict[str, Any]
    valid: bool
    error: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    latency_ms: float
    request_id: str | None
    ts: float
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class DecisionRejected:
    """The risk manager refused one action of a decision; `rule` names the rule."""

    cycle_id: str
    trader: str
    symbol: str
    action: str
    rule: str
    detail: str
    ts: float
    id: uuid.UUID = field(default_factory=new_id)


# ---------------------------------------------------------------- broker


Side = Literal["long", "short"]
CloseReason = Literal["decision", "stop_loss", "take_profit", "liquidation", "flip"]


@dataclass(frozen=True, slots=True)
class OrderFilled:
    """A market order filled on a trader's paper account."""

    trader: str
    symbol: str
    side: Literal["buy", "sell"]
    qty: float
    price: float
    notional: float
    fee: float
    realized_pnl: float
    reason: str  # decision | stop_loss | take_profit | liquidation
    cycle_id: str | None
    ref_price: float | None  # the snapshot's price the decision saw (for latency cost)
    ts: float
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class PositionOpened:
    trader: str
    symbol: str
    side: Side
    qty: float
    entry_price: float
    leverage: int
    margin: float
    stop_loss: float | None
    take_profit: float | None
    liquidation_price: float
    reason: str  # the trader's own reason for opening it
    cycle_id: str | None
    ts: float
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class PositionClosed:
    trader: str
    symbol: str
    side: Side
    qty: float
    entry_price: float
    exit_price: float
    realized_pnl: float
    fees: float
    reason: CloseReason
    opened_at: float
    cycle_id: str | None
    ts: float
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class FundingPaid:
    """Funding charged (amount > 0) or received (amount < 0) on a position."""

    trader: str
    symbol: str
    rate: float
    mark: float
    notional: float
    amount: float
    ts: float
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """A trader's whole account at one instant: a point of the equity curve.

    Published after every cycle, on a timer, and after every change to the account (fill,
    funding, liquidation, suspension), so the latest persisted snapshot per trader is enough to
    rebuild the account exactly after a crash. `positions` holds each open position's full state
    and `state` holds risk baselines and counters (see broker/risk for keys).
    """

    trader: str
    cash: float
    margin: float
    unrealized_pnl: float
    equity: float
    realized_pnl: float
    fees: float
    funding: float
    peak_equity: float
    drawdown_pct: float
    return_pct: float
    positions: tuple[dict[str, Any], ...]
    state: dict[str, Any]
    cause: str  # cycle | timer | fill | funding | liquidation | risk | start
    cycle_id: str | None
    ts: float
    id: uuid.UUID = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class Leaderboard:
    """The leaderboard after a cycle: one dict per trader, best first."""

    cycle_id: str | None
    rows: tuple[dict[str, Any], ...]
    ts: float
    id: uuid.UUID = field(default_factory=new_id)


Event = (
    MarketEvent
    | FeedStatus
    | RunStarted
    | JobRun
    | CycleFinished
    | DecisionMade
    | DecisionRejected
    | OrderFilled
    | PositionOpened
    | PositionClosed
    | FundingPaid
    | AccountSnapshot
    | Leaderboard
)
