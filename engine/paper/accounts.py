"""Paper accounts: pure USD-M perpetual futures arithmetic, no I/O and no clock.

Binance USD-M formulas (isolated margin, one-way mode), with s = +1 long / -1 short:

* unrealized PnL   = s * qty * (mark - entry)
* initial margin   = qty * price / leverage        (taken out of cash into the position)
* taker fee        = qty * price * taker_fee       (paid from cash on every fill)
* funding          = s * qty * mark * funding_rate (> 0 paid, < 0 received; from/to the margin)
* liquidation price LP = (WB + cumB - s*qty*entry) / (qty*MMR - s*qty), WB the isolated
  margin, MMR and cumB the rate and maintenance amount of the margin tier the position's
  notional (qty * LP) is in at that price.

Money is kept at full float precision; amounts reconcile to the cent (tolerance 0.005 USDT).
The ledger identity holds after every operation:
    cash + Σ margin = capital + realized PnL - fees - funding,  equity = cash + Σ margin + Σ uPnL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from engine.paper.stats import ReturnStats

SideName = Literal["long", "short"]
RECENT_FILLS_KEPT = 20


_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    """Return a dataclass's field names in order (`fields()` is slow on every snapshot)."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


class AccountError(Exception):
    """An order the account cannot take; `rule` names why (a risk rule name)."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


# ---------------------------------------------------------------- rounding and formulas


def sign_of(side: str) -> int:
    """Return +1 for a long, -1 for a short."""
    return 1 if side == "long" else -1


def unrealized_pnl(side: str, qty: float, entry: float, mark: float) -> float:
    """Return Binance's unrealized PnL: size * direction * (mark - entry)."""
    return sign_of(side) * qty * (mark - entry)


def liquidation_price(side: str, qty: float, entry: float, margin: float, mmr: float,
                      maint_amount: float = 0.0) -> float:
    """Return the isolated, one-way liquidation price (0 when it can never be liquidated)."""
    if qty <= 0:
        return 0.0
    s = sign_of(side)
    lp = (margin + maint_amount - s * qty * entry) / (qty * mmr - s * qty)
    return max(lp, 0.0)


# ---------------------------------------------------------------- positions


@dataclass(slots=True)
class Position:
    """One net isolated position on a symbol; all fields are its complete state."""

    symbol: str
    side: SideName
    qty: float
    entry_price: float
    leverage: int
    margin: float
    maint_margin_rate: float
    maint_amount: float = 0.0  # Binance's "cum" of the position's margin bracket
    stop_loss: float | None = None
    take_profit: float | None = None
    open_reason: str = ""
    opened_at: float = 0.0
    cycle_id: str | None = None
    fees: float = 0.0  # every fee paid on this position so far (open, adds, reduces)
    funding: float = 0.0  # funding paid (> 0) or received (< 0) so far
    realized_pnl: float = 0.0  # from partial reduces so far
    liquidation_price: float = 0.0  # derived; refreshed whenever qty/entry/margin change
    # The symbol's margin tiers as (rate, maint_amount), not persisted (the broker sets them).
    tiers: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        self.refresh()

    @property
    def sign(self) -> int:
        return 1 if self.side == "long" else -1

    def refresh(self) -> None:
        """Recompute the liquidation price (and its tier) from qty, entry and margin.

        Binance takes the tier from the notional at the mark, so maintenance margin is the
        convex max over tiers of qty*mark*rate - maint_amount, and the price where the margin
        left meets it is the highest tier price for a long, the lowest for a short.
        """
        tiers = self.tiers or ((self.maint_margin_rate, self.maint_amount),)
        prices = [(liquidation_price(self.side, self.qty, self.entry_price, self.margin, *tier),
                   tier) for tier in tiers]
        pick = max if self.side == "long" else min  # the first tier among equals
        self.liquidation_price, (self.maint_margin_rate, self.maint_amount) = pick(
            prices, key=lambda p: p[0])

    def unrealized(self, mark: float) -> float:
        """Return the unrealized PnL at `mark`."""
        return self.sign * self.qty * (mark - self.entry_price)

    def notional(self, mark: float) -> float:
        """Return the position's notional at `mark`."""
        return self.qty * mark

    def liquidated_at(self, mark: float) -> bool:
        """Return whether `mark` reaches the liquidation price."""
        lp = self.liquidation_price
        if lp <= 0:
            return False
        return mark <= lp if self.side == "long" else mark >= lp

    def to_dict(self) -> dict[str, Any]:
        """Return the complete state as JSON-able data (plain values: asdict's, no deep copy)."""
        return {n: getattr(self, n) for n in _names(type(self)) if n != "tiers"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Position:
        """Rebuild a position from `to_dict` output (extra keys such as mark are ignored)."""
        names = {f.name for f in fields(cls)} - {"liquidation_price", "tiers"}
        return cls(**{k: data[k] for k in names if k in data})


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """A position that was closed completely: its whole life in one record."""

    symbol: str
    side: SideName
    qty: float  # quantity of the final closing fill
    entry_price: float
    exit_price: float
    realized_pnl: float  # over the position's whole life (partial reduces included)
    fees: float  # over its whole life (opening, adds, reduces and the close)
    funding: float
    opened_at: float
    open_reason: str

    @property
    def net(self) -> float:
        return self.realized_pnl - self.fees - self.funding


@dataclass(frozen=True, slots=True)
class Fill:
    """One market fill on an account, and what it did to the position."""

    symbol: str
    side: Literal["buy", "sell"]
    qty: float
    price: float
    fee: float
    realized_pnl: float
    opened: Position | None = None  # set when this fill opened a new position
    closed: ClosedTrade | None = None  # set when this fill closed the position completely

    @property
    def notional(self) -> float:
        return self.qty * self.price


# ---------------------------------------------------------------- account state


@dataclass(slots=True)
class AccountState:
    """Risk baselines and counters: everything besides money that a restart must restore."""

    sod_equity: float  # equity at the start of the current UTC day
    sod_day: int  # that day, as days since the epoch
    peak_equity: float
    max_drawdown_pct: float = 0.0  # worst drawdown from a peak seen so far
    suspended_until: float | None = None  # daily loss limit: no new positions until then
    stopped: bool = False  # max drawdown: no new positions ever again
    trades: int = 0  # positions closed completely
    wins: int = 0  # of those, closed with realized - fees - funding > 0
    liquidations: int = 0
    decisions: int = 0
    invalid: int = 0
    holds: int = 0
    skipped: int = 0  # cycles it was due but not asked (cool-down, spend cap): no decision
    adjustments: int = 0  # stop-loss/take-profit moves of open positions (adjust, hold + prices)
    llm_cost: float = 0.0
    latency_cost: float = 0.0  # USDT lost (> 0) to price moves between snapshot and fill
    funding_settled: dict[str, float] = field(default_factory=dict)  # symbol → last funding time
    returns: ReturnStats = field(default_factory=ReturnStats)
    recent_fills: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the state as JSON-able data."""
        data = {n: getattr(self, n) for n in _names(type(self))}
        data["funding_settled"] = dict(self.funding_settled)
        data["returns"] = self.returns.to_dict()
        data["recent_fills"] = list(self.recent_fills)  # a kept fill is never changed: shared
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccountState:
        """Rebuild the state from `to_dict` output."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["funding_settled"] = dict(data.get("funding_settled") or {})
        kwargs["returns"] = ReturnStats.from_dict(data.get("returns") or {})
        kwargs["recent_fills"] = [dict(f) for f in data.get("recent_fills") or ()]
        return cls(**kwargs)


@dataclass(slots=True)
class Account:
    """A trader's paper futures account: cash, isolated positions, and the ledger totals."""

    trader: str
    capital: float
    cash: float
    state: AccountState
    realized_pnl: float = 0.0
    fees: float = 0.0
    funding: float = 0.0
    positions: dict[str, Position] = field(default_factory=dict)

    @classmethod
    def new(cls, trader: str, capital: float, now: float) -> Account:
        """Open a fresh account holding `capital` USDT in cash."""
        capital = float(capital)
        state = AccountState(sod_equity=capital, sod_day=int(now // 86_400), peak_equity=capital)
        return cls(trader=trader, capital=capital, cash=capital, state=state)

    # ------------------------------------------------------------ valuation

    def margin(self) -> float:
        """Return the margin held by all positions."""
        return sum(p.margin for p in self.positions.values())

    def unrealized(self, marks: Mapping[str, float]) -> float:
        """Return the unrealized PnL of all positions at `marks` (entry when no mark)."""
        return sum(p.unrealized(marks.get(s, p.entry_price)) for s, p in self.positions.items())

    def equity(self, marks: Mapping[str, float]) -> float:
        """Return cash + margin + unrealized PnL."""
        return self.cash + self.margin() + self.unrealized(marks)

    def exposure(self, marks: Mapping[str, float]) -> float:
        """Return the total notional of all positions at `marks`."""
        return sum(p.notional(marks.get(s, p.entry_price)) for s, p in self.positions.items())

    def observe_equity(self, equity: float) -> None:
        """Track the peak equity and the worst drawdown from it."""
        st = self.state
        st.peak_equity = max(st.peak_equity, equity)
        if st.peak_equity > 0:
            st.max_drawdown_pct = max(st.max_drawdown_pct,
                                      (st.peak_equity - equity) / st.peak_equity * 100)

    # ------------------------------------------------------------ orders

    def open(self, symbol: str, side: SideName, qty: float, price: float, *, leverage: int,
             fee_rate: float, mmr: float, now: float, stop_loss: float | None = None,
             take_profit: float | None = None, reason: str = "",
             cycle_id: str | None = None, tiers: tuple[tuple[float, float], ...] = ()) -> Fill:
        """Open a position, or add to the one on the same side (average entry, same leverage).

        `tiers`: the symbol's margin tiers as (rate, maint_amount), when it has more than `mmr`.
        """
        pos = self.positions.get(symbol)
        if pos is not None and pos.side != side:
            raise AccountError("flip_first", f"{symbol} holds a {pos.side}; close it first")
        if qty <= 0 or price <= 0:
            raise AccountError("min_notional", f"quantity {qty} at {price} is nothing")
        lev = pos.leverage if pos is not None else leverage
        notional = qty * price
        margin = notional / lev
        fee = notional * fee_rate
        if margin + fee > self.cash + 1e-9:
            raise AccountError("insufficient_margin", f"needs {margin + fee:.2f} USDT "
                               f"(margin + fee), cash {self.cash:.2f}")
        self.cash -= margin + fee
        self.fees += fee
        opened = None
        if pos is None:
            pos = Position(symbol=symbol, side=side, qty=qty, entry_price=price, leverage=lev,
                           margin=margin, maint_margin_rate=mmr, stop_loss=stop_loss,
                           take_profit=take_profit, open_reason=reason, opened_at=now,
                           cycle_id=cycle_id, fees=fee, tiers=tiers)
            self.positions[symbol] = pos
            opened = pos
        else:
            total = pos.qty + qty
            pos.entry_price = (pos.entry_price * pos.qty + price * qty) / total
            pos.qty = total
            pos.margin += margin
            pos.fees += fee
            if stop_loss is not None:
                pos.stop_loss = stop_loss
            if take_profit is not None:
                pos.take_profit = take_profit
            pos.refresh()
        return Fill(symbol, "buy" if side == "long" else "sell", qty, price, fee, 0.0,
                    opened=opened)

    def close(self, symbol: str, qty: float | None, price: float, *, fee_rate: float) -> Fill:
        """Close `qty` of the position (all of it when None or more), booking PnL and the fee."""
        pos = self.positions.get(symbol)
        if pos is None:
            raise AccountError("no_position", f"no open position on {symbol}")
        if qty is None or qty >= pos.qty - 1e-12:
            qty = pos.qty
        if qty <= 0:
            raise AccountError("min_notional", f"quantity {qty} is nothing")
        full = qty == pos.qty
        released = pos.margin if full else pos.margin * qty / pos.qty
        # Isolated margin: a position can never lose more than the margin it holds.
        pnl = max(pos.sign * qty * (price - pos.entry_price), -released)
        fee = min(qty * price * fee_rate, max(0.0, self.cash + released + pnl))
        self._book(pos, qty, released, pnl, fee)
        return self._fill(pos, qty, price, fee, pnl, full)

    def liquidate(self, symbol: str, price: float) -> Fill:
        """Liquidate the position: its whole margin is lost (what the loss leaves is the fee)."""
        pos = self.positions[symbol]
        qty, released = pos.qty, pos.margin
        pnl = max(pos.sign * qty * (price - pos.entry_price), -released)
        # The part of the margin the price loss leaves is kept as the liquidation clearance
        # fee (Binance's insurance fund), so cash is unchanged and the margin is gone.
        fee = max(0.0, released + pnl)
        self._book(pos, qty, released, pnl, fee)
        self.state.liquidations += 1
        return self._fill(pos, qty, price, fee, pnl, True)

    def apply_funding(self, symbol: str, rate: float, mark: float) -> float:
        """Charge (> 0) or pay (< 0) funding on the position from/to its margin; return it."""
        pos = self.positions[symbol]
        amount = pos.sign * pos.qty * mark * rate
        pos.margin -= amount
        pos.funding += amount
        self.funding += amount
        pos.refresh()
        return amount

    def _book(self, pos: Position, qty: float, released: float, pnl: float, fee: float) -> None:
        self.cash += released + pnl - fee
        self.realized_pnl += pnl
        self.fees += fee
        pos.margin -= released
        pos.qty -= qty
        pos.realized_pnl += pnl
        pos.fees += fee

    def _fill(self, pos: Position, qty: float, price: float, fee: float, pnl: float,
              full: bool) -> Fill:
        closed = None
        if full:
            del self.positions[pos.symbol]
            closed = ClosedTrade(pos.symbol, pos.side, qty, pos.entry_price, price,
                                 pos.realized_pnl, pos.fees, pos.funding, pos.opened_at,
                                 pos.open_reason)
            self.state.trades += 1
            self.state.wins += closed.net > 0
        else:
            pos.refresh()
        return Fill(pos.symbol, "sell" if pos.side == "long" else "buy", qty, price, fee, pnl,
                    closed=closed)

    # ------------------------------------------------------------ persistence

    def ledger_gap(self) -> float:
        """Return cash + margin - (capital + realized - fees - funding): 0 when consistent."""
        return (self.cash + self.margin()
                - (self.capital + self.realized_pnl - self.fees - self.funding))

    def remember_fill(self, fill: dict[str, Any]) -> None:
        """Keep `fill` among the recent fills shown to the trader."""
        fills = self.state.recent_fills
        fills.append(fill)
        del fills[:-RECENT_FILLS_KEPT]
