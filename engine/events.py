"""Every event the engine publishes: small, frozen, slotted dataclasses, never mutated.

Market events (`BookTicker`, `Kline`, `MarkPrice`, `Ticker24h`) are the hot path and carry no id;
they are frozen msgspec Structs (see `_MarketEvent`), the others frozen dataclasses.
Every event that becomes a database row carries `id`, made when the event is created, so a retried
batch can never insert a row twice. Times are epoch seconds (float, UTC) from the engine's clock.
Money is in USDT as float; amounts are rounded to the cent where they reconcile.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Any, Literal

import msgspec
import uuid_utils

_LOW62 = (1 << 62) - 1
_id_lock = threading.Lock()
_last_id = 0


def new_id() -> uuid.UUID:
    """Return a new UUIDv7 (RFC 9562), greater than every id this process made before."""
    global _last_id
    # uuid-utils orders ids within a millisecond; the guard keeps the order across a wall-clock
    # step back too (ids are wall time, not the engine clock: unique and ordered in a replay).
    value = uuid_utils.uuid7().int
    with _id_lock:
        value = monotonic_after(_last_id, value)
        _last_id = value
    return uuid.UUID(int=value)


def seed_ids(after: uuid.UUID | None) -> None:
    """Make every later `new_id()` sort after `after` (the newest id already persisted), so ids
    keep their order across a restart whose wall clock stepped back."""
    global _last_id
    if after is not None:
        with _id_lock:
            _last_id = max(_last_id, after.int)


def monotonic_after(last: int, value: int) -> int:
    """Return `value` if it sorts after `last`, else the next UUIDv7 after `last`."""
    if value > last:
        return value
    ms, rand_a, rand_b = last >> 80, (last >> 64) & 0xFFF, (last & _LOW62) + 1
    if rand_b > _LOW62:
        rand_b, rand_a = 0, rand_a + 1
    if rand_a > 0xFFF:
        rand_a, ms = 0, ms + 1
    return ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b


# ---------------------------------------------------------------- market data (hot path)


class _MarketEvent(msgspec.Struct, gc=False):
    """Base of the four market events: msgspec Structs, frozen like the dataclasses below.

    The feed makes one per frame (hundreds of thousands a second in a replay): a Struct is built
    in C about ten times faster than a frozen dataclass, holds its fields in slots, and is not
    tracked by the garbage collector (floats and strings only). Assigning or deleting a field
    raises `dataclasses.FrozenInstanceError`, equality and hashing compare the fields, as for
    every other event; `msgspec.structs.fields` lists them (`dataclasses.fields` does not).
    """

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash(msgspec.structs.astuple(self))


class BookTicker(_MarketEvent, gc=False):
    """Best bid/ask for a symbol (Binance `bookTicker`)."""

    symbol: str
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float
    event_time: float  # exchange time (E, or T on futures), epoch seconds
    recv_time: float  # local receive time, epoch seconds


class Kline(_MarketEvent, gc=False):
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


class MarkPrice(_MarketEvent, gc=False):
    """Mark price and funding (Binance futures `markPrice@1s`)."""

    symbol: str
    mark: float
    index: float
    funding_rate: float
    next_funding_time: float
    event_time: float
    recv_time: float


class Ticker24h(_MarketEvent, gc=False):
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
    mode: str = "live"  # live | replay | backtest: arenas of different modes are kept apart
    source: str | None = None  # replay: sha256 of the file; backtest: hash of the window
    # A backtest's per-trader labels: model, training cutoff, exposure, blind (app.exposure)
    labels: dict[str, Any] | None = None


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
    model_version: str | None = None  # the exact model the API answered with (None: no answer)
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
    """The leaderboard after a cycle: one dict per trader, best first.

    `pairwise` holds P(A beats B) per pair of traders (A ranked first) and `stats` how the
    statistics are computed (annualization, minimum returns, CI level): engine.paper.leaderboard.
    """

    cycle_id: str | None
    rows: tuple[dict[str, Any], ...]
    ts: float
    id: uuid.UUID = field(default_factory=new_id)
    pairwise: tuple[dict[str, Any], ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TraderCooldown:
    """A trader failed `failures` times in a row and sits out until `until` (not persisted)."""

    trader: str
    failures: int
    until: float
    last_error: str | None
    ts: float


@dataclass(frozen=True, slots=True)
class TraderBudgetReached:
    """A trader reached a spend cap and holds (reason `budget`) until `until` (not persisted).

    `cap` names the cap (trader_daily_usd, trader_total_usd, run_daily_usd, run_total_usd);
    `until` is the next 00:00 UTC for a daily cap, infinity for a total cap.
    """

    trader: str
    cap: str
    cap_usd: float
    spent_usd: float
    until: float
    ts: float


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
    | TraderCooldown
    | TraderBudgetReached
)
