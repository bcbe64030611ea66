"""Ticks per second through the broker's trigger check, 1,000 open positions over 6 symbols.

Two figures, each the median of several runs after a warm-up:
* quiet: prices wander inside every stop/take-profit/liquidation band (the usual tick), so the
  per-symbol watch answers with a few comparisons;
* busy: prices cross a band now and then, so positions are scanned, stopped out, liquidated and
  their fills, closes and snapshots published (positions are reopened between runs).
"""

from __future__ import annotations

import logging
import random

import structlog

from bench.common import Result, at_least, median_of, timer
from engine.bus import Bus
from engine.clock import SimClock
from engine.decision import Action
from engine.events import AccountSnapshot, BookTicker, MarkPrice, OrderFilled
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
        price, sign = SYMBOLS[symbol], rng.choice((1, -1))
        away = rng.uniform(0.03, 0.08)
        broker.execute(trader, [Action(
            symbol=symbol, action="open_long" if sign > 0 else "open_short",
            size_usdt=rng.uniform(1_000, 20_000), leverage=rng.randint(2, 10),
            stop_loss=price * (1 - sign * away), take_profit=price * (1 + sign * away))],
            "setup", None)
    return broker


def ticks(n: int, band: float, seed: int = 11) -> list[object]:
    """Return `n` market events: BookTickers, and a MarkPrice every 10th, within ±band."""
    rng = random.Random(seed)
    names = list(SYMBOLS)
    out: list[object] = []
    for i in range(n):
        symbol = names[i % len(names)]
        mid = SYMBOLS[symbol] * (1 + rng.uniform(-band, band))
        t = T0 + i * 0.001
        if i % 10 == 9:
            out.append(MarkPrice(symbol, mid, mid, 0.0001, T0 + 28_800, t, t))
        else:
            out.append(BookTicker(symbol, mid * 0.99995, 1.0, mid * 1.00005, 1.0, t, t))
    return out


def _rate(broker_factory, events: list[object]) -> float:
    broker = broker_factory()
    on_market = broker.on_market
    start = timer()
    for e in events:
        on_market(e)
    return len(events) / (timer() - start)


def run(quick: bool = False) -> list[Result]:
    """Measure ticks/s through the trigger check with 1,000 positions over 6 symbols."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    n = 50_000 if quick else 300_000
    runs = 3 if quick else 5
    base = build()
    open_positions = sum(len(a.positions) for a in base.accounts.values())
    quiet_events = ticks(n, 0.02)
    quiet, _ = median_of(lambda: _rate(lambda: base, quiet_events), runs=runs)
    busy_events = ticks(n // 10, 0.12)
    busy, _ = median_of(lambda: _rate(build, busy_events), runs=runs)
    probe = build()
    for e in busy_events:
        probe.on_market(e)
    closed = open_positions - sum(len(a.positions) for a in probe.accounts.values())
    detail = f"{open_positions} positions over {len(SYMBOLS)} symbols; {len(quiet_events)} ticks"
    return [
        Result("triggers.quiet_ticks_per_s", quiet, "ticks/s", ">= 200000",
               at_least(quiet, 200_000), detail),
        Result("triggers.busy_ticks_per_s", busy, "ticks/s", ">= 2000", at_least(busy, 2_000),
               f"{len(busy_events)} ticks closing {closed} positions by stop, take-profit or "
               "liquidation (fills, events and snapshots included)"),
    ]


if __name__ == "__main__":
    for r in run(quick=False):
        print(r)
