"""Ticks per second through the broker's trigger check, 1,000 open positions over 6 symbols.

Figures, each the median of several runs after a warm-up:
* quiet: prices wander inside every stop/take-profit/liquidation band (the usual tick), so the
  per-symbol watch answers with a few comparisons;
* busy: each symbol's price walks in steps of up to ±0.5 % a tick, so ticks keep crossing bands
  and positions are stopped out, taken profit on or liquidated, their fills, closes and snapshots
  published. Every position a tick closes is reopened right after that tick (at the tick's price,
  new bands 3-8 % away), outside the timed window, so every measured tick sees 1,000 open
  positions;
* the cost per closed position: (busy time - the same number of quiet ticks) / positions closed.

No floor was set for these: the figures are for information (absolute, so they move with the
host), not targets.
"""

from __future__ import annotations

import logging
import random

import structlog

from bench.common import Result, median_of, timer
from engine.bus import Bus
from engine.clock import SimClock
from engine.decision import Action
from engine.events import AccountSnapshot, BookTicker, MarkPrice, OrderFilled, PositionClosed
from engine.paper.broker import PaperBroker
from engine.settings import BrokerSettings, RiskSettings

SYMBOLS = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0, "SOLUSDT": 150.0, "BNBUSDT": 600.0,
           "XRPUSDT": 0.6, "DOGEUSDT": 0.15}
POSITIONS = 1_000
T0 = 1_767_225_600.0


class _Book:
    def __init__(self) -> None:
        self.prices = dict(SYMBOLS)

    def quote(self, symbol: str) -> object:
        p = self.prices[symbol]
        return _Q(p, p, p)


class _Q:
    __slots__ = ("ask", "bid", "mark")

    def __init__(self, bid: float, ask: float, mark: float) -> None:
        self.bid, self.ask, self.mark = bid, ask, mark

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2

    @property
    def price(self) -> float:
        return self.mark


def _open(broker: PaperBroker, rng: random.Random, trader: str, symbol: str,
          price: float) -> None:
    sign = rng.choice((1, -1))
    away = rng.uniform(0.03, 0.08)
    broker.execute(trader, [Action(
        symbol=symbol, action="open_long" if sign > 0 else "open_short",
        size_usdt=rng.uniform(1_000, 20_000), leverage=rng.randint(2, 10),
        stop_loss=price * (1 - sign * away), take_profit=price * (1 + sign * away))],
        "setup", None)


def build(seed: int = 7) -> PaperBroker:
    """Return a broker holding 1,000 positions spread evenly over the 6 symbols."""
    rng = random.Random(seed)
    bus = Bus()
    bus.subscribe("display", (OrderFilled, AccountSnapshot), capacity=1_000, policy="drop_oldest")
    broker = PaperBroker(BrokerSettings(), RiskSettings(), bus, SimClock(T0), _Book(),
                         symbols=SYMBOLS)
    names = list(SYMBOLS)
    for i in range(POSITIONS):
        trader, symbol = f"t{i // len(names)}", names[i % len(names)]
        if trader not in broker.accounts:
            broker.open_account(trader, 1_000_000.0)
        _open(broker, rng, trader, symbol, SYMBOLS[symbol])
    return broker


def _open_positions(broker: PaperBroker) -> int:
    return sum(len(a.positions) for a in broker.accounts.values())


def ticks(n: int, band: float, seed: int = 11, walk: bool = False) -> list[object]:
    """Return `n` market events: BookTickers, and a MarkPrice every 10th, within ±band of the
    start price (or, with `walk`, each symbol's price a random walk of steps up to ±band)."""
    rng = random.Random(seed)
    names = list(SYMBOLS)
    prices = dict(SYMBOLS)
    out: list[object] = []
    for i in range(n):
        symbol = names[i % len(names)]
        if walk:
            mid = prices[symbol] = prices[symbol] * (1 + rng.uniform(-band, band))
        else:
            mid = SYMBOLS[symbol] * (1 + rng.uniform(-band, band))
        t = T0 + i * 0.001
        if i % 10 == 9:
            out.append(MarkPrice(symbol, mid, mid, 0.0001, T0 + 28_800, t, t))
        else:
            out.append(BookTicker(symbol, mid * 0.99995, 1.0, mid * 1.00005, 1.0, t, t))
    return out


def _rate(broker: PaperBroker, events: list[object]) -> float:
    on_market = broker.on_market
    start = timer()
    for e in events:
        on_market(e)
    return len(events) / (timer() - start)


def _busy(events: list[object]) -> tuple[float, int, int]:
    """Return (seconds in the trigger check, positions closed, fewest open at any tick) over
    `events`, reopening after each tick what it closed."""
    broker = build()
    closes = broker.bus.subscribe("bench.closes", (PositionClosed,), capacity=POSITIONS * 4)
    book: _Book = broker.book  # type: ignore[assignment]
    rng = random.Random(5)
    on_market = broker.on_market
    spent, closed, fewest = 0.0, 0, _open_positions(broker)
    for e in events:
        start = timer()
        on_market(e)
        spent += timer() - start
        done = closes.drain()
        if done:
            closed += len(done)
            symbol = e.symbol  # type: ignore[attr-defined]
            book.prices[symbol] = price = (e.mark if type(e) is MarkPrice  # type: ignore[attr-defined]
                                           else (e.bid + e.ask) / 2)  # type: ignore[attr-defined]
            for c in done:  # a tick closes positions of its own symbol only
                assert isinstance(c, PositionClosed) and c.symbol == symbol
                _open(broker, rng, c.trader, symbol, price)
            closes.drain()  # the reopening's own events
            fewest = min(fewest, _open_positions(broker))
    return spent, closed, fewest


def run(quick: bool = False, tiny: bool = False) -> list[Result]:
    """Measure ticks/s through the trigger check with 1,000 positions over 6 symbols (`tiny`: a
    smoke pass of the workload, figures meaningless)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    n = 2_000 if tiny else 50_000 if quick else 300_000
    runs = 1 if tiny else 3 if quick else 5
    base = build()
    open_positions = _open_positions(base)
    quiet_events = ticks(n, 0.02)
    quiet, _ = median_of(lambda: _rate(base, quiet_events), runs=runs)
    busy_events = ticks(1_000 if tiny or quick else 3_000, 0.005, walk=True)
    busy_runs = [_busy(busy_events) for _ in range(3)]
    spent, closed, fewest = sorted(busy_runs)[len(busy_runs) // 2]
    busy = len(busy_events) / spent
    per_close_us = max(0.0, spent - len(busy_events) / quiet) / closed * 1e6 if closed else 0.0
    detail = f"{open_positions} positions over {len(SYMBOLS)} symbols; {len(quiet_events)} ticks"
    return [
        Result("triggers.quiet_ticks_per_s", round(quiet), "ticks/s", "", None, detail,
               workload=min(open_positions, len(quiet_events))),
        Result("triggers.busy_ticks_per_s", round(busy), "ticks/s", "", None,
               f"{len(busy_events)} ticks closing {closed} positions by stop, take-profit or "
               f"liquidation (fills, events and snapshots included), each reopened after its "
               f"tick: at least {fewest} positions open at every measured tick; median of 3",
               workload=fewest if closed else 0),
        Result("triggers.cost_per_closed_position", round(per_close_us, 1), "us", "", None,
               f"(busy time - {len(busy_events)} quiet ticks) / {closed} positions closed",
               workload=closed),
    ]


if __name__ == "__main__":
    for r in run(quick=False):
        print(r)
