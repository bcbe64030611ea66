"""The risk manager: every action of a decision checked before execution. Pure: no I/O, no clock.

Each refusal names exactly one rule of `RULES`; the first rule an action breaks is the one named.
Actions are checked in order and cumulatively: an accepted action changes the simulated cash and
positions the next action of the same decision is checked against. Percent limits are of the
account's equity at mark when the review starts.

Closing and stop/take-profit updates reduce risk, so a suspended or stopped trader may still do
them; only opening or adding is refused by `daily_loss_limit` and `max_drawdown`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from engine.decision import ACTIONS, STOP_MOVES, Action
from engine.paper.accounts import Account
from engine.paper.rounding import fill_price, floor_to_step
from engine.settings import BrokerSettings, RiskSettings, SymbolFilter

RULES: tuple[str, ...] = (
    "unknown_symbol",  # the symbol is not traded by this arena
    "unknown_action",  # not one of engine.decision.ACTIONS
    "max_drawdown",  # risk.max_drawdown_pct reached: the trader is stopped for good (opens only)
    "daily_loss_limit",  # risk.daily_loss_limit_pct since 00:00 UTC: suspended until next 00:00 UTC
    "price_stale",  # the symbol's price is stale in the snapshot, or there is no bid/ask
    "leverage_above_max",  # leverage > risk.max_leverage
    "stop_wrong_side",  # long stop ≥ bid, short stop ≤ ask
    "take_profit_wrong_side",  # long take-profit ≤ bid, short take-profit ≥ ask
    "stop_too_close",  # stop nearer than risk.min_stop_distance_pct to the price
    "take_profit_too_close",  # take-profit nearer than risk.min_stop_distance_pct
    "no_position",  # close or adjust (or a hold moving stops) on a symbol with no position
    "min_notional",  # size missing, or below the symbol's min notional after step rounding
    "max_open_positions",  # a new position beyond risk.max_open_positions
    "position_too_large",  # position notional > risk.max_position_pct % of equity
    "exposure_cap",  # all positions' notional > risk.max_total_exposure_pct % of equity
    "insufficient_margin",  # initial margin + fee > free cash
)

OPENS = ("open_long", "open_short")


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused action and the rule it broke."""

    symbol: str
    action: str
    rule: str
    detail: str


@dataclass(frozen=True, slots=True)
class Prices:
    """What the risk manager needs of a symbol's quote."""

    bid: float
    ask: float
    mark: float


@dataclass(slots=True)
class _SimPos:
    side: str
    qty: float
    entry: float
    margin: float
    leverage: int


class _Refused(Exception):  # control flow inside review only
    def __init__(self, rule: str, detail: str) -> None:
        self.rule, self.detail = rule, detail


class RiskManager:
    """Checks decisions against the risk settings; knows the symbols and their filters."""

    def __init__(self, settings: RiskSettings, broker: BrokerSettings,
                 filter_for: Callable[[str], SymbolFilter] | None = None) -> None:
        self.settings = settings
        self.broker = broker
        self.filter_for = filter_for or broker.filter_for

    # ------------------------------------------------------------ trader-level limits

    def update_limits(self, account: Account, equity: float, now: float) -> str | None:
        """Roll the day, track the peak, trip or lift limits; return what changed, if anything."""
        st = account.state
        account.observe_equity(equity)
        changed = None
        day = int(now // 86_400)
        if day != st.sod_day:
            st.sod_day, st.sod_equity = day, equity
        if st.suspended_until is not None and now >= st.suspended_until:
            st.suspended_until = None
            changed = "resumed"
        if not st.stopped and st.peak_equity > 0:
            if (st.peak_equity - equity) / st.peak_equity * 100 >= self.settings.max_drawdown_pct:
                st.stopped = True
                return "max_drawdown"
        if st.suspended_until is None and st.sod_equity > 0:
            loss_pct = (st.sod_equity - equity) / st.sod_equity * 100
            if loss_pct >= self.settings.daily_loss_limit_pct:
                st.suspended_until = (day + 1) * 86_400.0
                return "daily_loss_limit"
        return changed

    @staticmethod
    def blocked(account: Account, now: float) -> str | None:
        """Return the rule that keeps the trader from opening positions, if any."""
        st = account.state
        if st.stopped:
            return "max_drawdown"
        if st.suspended_until is not None and now < st.suspended_until:
            return "daily_loss_limit"
        return None

    # ------------------------------------------------------------ decisions

    def review(self, account: Account, actions: Sequence[Action], *, symbols: Collection[str],
               prices: Mapping[str, Prices | None], stale: Collection[str], equity: float,
               now: float) -> tuple[list[Action], list[Refusal]]:
        """Check each action in order against the rules; return the accepted and the refused."""
        cash = account.cash
        sim = {s: _SimPos(p.side, p.qty, p.entry_price, p.margin, p.leverage)
               for s, p in account.positions.items()}
        accepted: list[Action] = []
        refused: list[Refusal] = []
        for action in actions:
            try:
                keep, cash = self._check(account, action, sim, cash, symbols, prices, stale,
                                         equity, now)
            except _Refused as r:
                refused.append(Refusal(action.symbol, str(action.action), r.rule, r.detail))
                continue
            if keep:
                accepted.append(action)
        return accepted, refused

    def _check(self, account: Account, a: Action, sim: dict[str, _SimPos], cash: float,
               symbols: Collection[str], prices: Mapping[str, Prices | None],
               stale: Collection[str], equity: float, now: float) -> tuple[bool, float]:
        """Raise _Refused, or return (keep the action?, cash after it)."""
        s = self.settings
        if a.symbol not in symbols:
            raise _Refused("unknown_symbol", f"{a.symbol!r} is not traded here")
        if a.action not in ACTIONS:
            raise _Refused("unknown_action", f"{a.action!r} is not one of {', '.join(ACTIONS)}")
        pos = sim.get(a.symbol)
        if a.action in STOP_MOVES:  # adjust, or a hold that carries new stops
            if a.stop_loss is None and a.take_profit is None:
                return False, cash  # nothing to do
            if pos is None:
                raise _Refused("no_position", f"no {a.symbol} position to set stops on")
        opening = a.action in OPENS
        if opening and (blocked := self.blocked(account, now)):
            raise _Refused(blocked, _blocked_detail(account, blocked))
        p = prices.get(a.symbol)
        if a.symbol in stale or p is None or not (p.bid > 0 and p.ask > 0):
            raise _Refused("price_stale", f"no fresh bid/ask for {a.symbol}")
        if a.action == "close":
            return self._check_close(a, pos, p, cash, sim)
        side = ("long" if a.action == "open_long" else "short") if opening else pos.side  # type: ignore[union-attr]
        leverage = a.leverage or 1
        if opening and leverage > s.max_leverage:
            raise _Refused("leverage_above_max", f"leverage {leverage} > max {s.max_leverage}")
        self._check_stops(a, side, p)
        if not opening:
            return True, cash  # a hold that only moves stops
        return True, self._check_open(a, side, leverage, pos, p, cash, sim, equity, prices)

    def _check_stops(self, a: Action, side: str, p: Prices) -> None:
        # Stops trigger on the price the position would close at: bid for longs, ask for shorts.
        ref = p.bid if side == "long" else p.ask
        min_pct = self.settings.min_stop_distance_pct
        if a.stop_loss is not None:
            if (a.stop_loss >= ref) if side == "long" else (a.stop_loss <= ref):
                raise _Refused("stop_wrong_side",
                               f"{side} stop {a.stop_loss} must be {_side_word(side, True)} {ref}")
        if a.take_profit is not None:
            if (a.take_profit <= ref) if side == "long" else (a.take_profit >= ref):
                raise _Refused("take_profit_wrong_side", f"{side} take-profit {a.take_profit} "
                               f"must be {_side_word(side, False)} {ref}")
        if a.stop_loss is not None and abs(ref - a.stop_loss) / ref * 100 < min_pct:
            raise _Refused("stop_too_close", f"stop {a.stop_loss} is within {min_pct}% of {ref}")
        if a.take_profit is not None and abs(a.take_profit - ref) / ref * 100 < min_pct:
            raise _Refused("take_profit_too_close",
                           f"take-profit {a.take_profit} is within {min_pct}% of {ref}")

    def _check_close(self, a: Action, pos: _SimPos | None, p: Prices, cash: float,
                     sim: dict[str, _SimPos]) -> tuple[bool, float]:
        if pos is None:
            raise _Refused("no_position", f"no open position on {a.symbol} to close")
        f = self.filter_for(a.symbol)
        raw = p.bid if pos.side == "long" else p.ask
        price = fill_price(raw, pos.side == "short", self.broker.slippage_for(pos.qty * raw),
                           f.tick_size)
        qty = pos.qty
        if a.size_usdt is not None:
            qty = min(pos.qty, floor_to_step(a.size_usdt / price, f.step_size))
            if qty <= 0:
                raise _Refused("min_notional", f"{a.size_usdt} USDT is less than one "
                               f"{f.step_size} step of {a.symbol} at {price}")
        return True, cash + self._release(a.symbol, pos, qty, price, sim)

    def _release(self, symbol: str, pos: _SimPos, qty: float, price: float,
                 sim: dict[str, _SimPos]) -> float:
        """Apply a simulated close of `qty`; return the cash it frees."""
        sign = 1 if pos.side == "long" else -1
        released = pos.margin * min(1.0, qty / pos.qty)
        pnl = max(sign * qty * (price - pos.entry), -released)
        freed = released + pnl - qty * price * self.broker.taker_fee
        if qty >= pos.qty:
            del sim[symbol]
        else:
            pos.qty -= qty
            pos.margin -= released
        return freed

    def _check_open(self, a: Action, side: str, leverage: int, pos: _SimPos | None, p: Prices,
                    cash: float, sim: dict[str, _SimPos], equity: float,
                    prices: Mapping[str, Prices | None]) -> float:
        s, f = self.settings, self.filter_for(a.symbol)
        buy = side == "long"
        price = fill_price(p.ask if buy else p.bid, buy,
                           self.broker.slippage_for(a.size_usdt or 0.0), f.tick_size)
        qty = floor_to_step((a.size_usdt or 0.0) / price, f.step_size)
        notional = qty * price
        if a.size_usdt is None or notional < f.min_notional or qty <= 0:
            raise _Refused("min_notional", f"{notional:.2f} USDT (size {a.size_usdt}) is below "
                           f"the {a.symbol} minimum of {f.min_notional} USDT")
        trial = {k: _SimPos(v.side, v.qty, v.entry, v.margin, v.leverage) for k, v in sim.items()}
        trial_cash = cash
        if pos is not None and pos.side != side:  # flip: the old position closes first
            raw = p.bid if pos.side == "long" else p.ask
            close_price = fill_price(raw, not buy, self.broker.slippage_for(pos.qty * raw),
                                     f.tick_size)
            trial_cash += self._release(a.symbol, trial[a.symbol], pos.qty, close_price, trial)
        existing = trial.get(a.symbol)
        if existing is None and len(trial) >= s.max_open_positions:
            raise _Refused("max_open_positions",
                           f"{len(trial)} positions open, max {s.max_open_positions}")
        new_notional = notional + (existing.qty * _mark(p, existing.entry) if existing else 0.0)
        if new_notional > s.max_position_pct / 100 * equity + 1e-9:
            raise _Refused("position_too_large", f"{a.symbol} notional {new_notional:.2f} > "
                           f"{s.max_position_pct}% of equity {equity:.2f}")
        total = notional + sum(v.qty * _mark(prices.get(k), v.entry) for k, v in trial.items())
        if total > s.max_total_exposure_pct / 100 * equity + 1e-9:
            raise _Refused("exposure_cap", f"total notional {total:.2f} > "
                           f"{s.max_total_exposure_pct}% of equity {equity:.2f}")
        lev = existing.leverage if existing else leverage
        cost = notional / lev + notional * self.broker.taker_fee
        if cost > trial_cash + 1e-9:
            raise _Refused("insufficient_margin",
                           f"needs {cost:.2f} USDT (margin + fee), free {trial_cash:.2f}")
        if existing is None:
            trial[a.symbol] = _SimPos(side, qty, price, notional / lev, lev)
        else:
            existing.entry = (existing.entry * existing.qty + price * qty) / (existing.qty + qty)
            existing.qty += qty
            existing.margin += notional / lev
        sim.clear()
        sim.update(trial)
        return trial_cash - cost


def _mark(p: Prices | None, fallback: float) -> float:
    return p.mark if p is not None and p.mark > 0 else fallback


def _side_word(side: str, stop: bool) -> str:
    return "below" if (side == "long") == stop else "above"


def _blocked_detail(account: Account, rule: str) -> str:
    if rule == "max_drawdown":
        return f"{account.trader} is stopped: max drawdown reached"
    return f"{account.trader} is suspended until {account.state.suspended_until} (next 00:00 UTC)"
