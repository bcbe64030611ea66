"""Property tests: random sequences of orders, price moves and funding through the paper broker.

After every step, with the ledger rebuilt independently from the published events:
* equity = cash + margin + unrealized PnL = capital + Σ realized - Σ fees - Σ funding + uPnL,
  to the cent;
* cash never goes below zero and no position is left past its bankruptcy price (so equity never
  goes below zero): a position that would have been is liquidated first;
and closing everything leaves cash = capital + realized PnL - fees - funding.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bus import Bus
from engine.clock import SimClock
from engine.decision import Action
from engine.events import AccountSnapshot, FundingPaid, OrderFilled
from engine.paper.broker import PaperBroker
from tests.support.broker import (
    T0,
    FakeBook,
    book_ticker,
    broker_settings,
    mark_price,
    risk_settings,
    snapshot_of,
)

CENT = 0.005
CAPITAL = 10_000.0
BASE = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0, "SOLUSDT": 150.0}
SYMBOLS = list(BASE)

symbol = st.sampled_from(SYMBOLS)
open_op = st.tuples(st.just("open"), symbol, st.sampled_from(["open_long", "open_short"]),
                    st.floats(0, 9_000), st.integers(1, 25),
                    st.none() | st.floats(0.005, 0.2), st.none() | st.floats(0.005, 0.3))
close_op = st.tuples(st.just("close"), symbol, st.none() | st.floats(0, 5_000))
move_op = st.tuples(st.just("move"), symbol, st.floats(-0.25, 0.25))
funding_op = st.tuples(st.just("funding"), symbol, st.floats(-0.003, 0.003))
ops = st.lists(st.one_of(open_op, close_op, move_op, move_op, funding_op), min_size=1, max_size=40)


class Harness:
    def __init__(self) -> None:
        self.clock = SimClock(T0)
        self.bus = Bus()
        self.sub = self.bus.subscribe("ledger", (OrderFilled, FundingPaid, AccountSnapshot),
                                      capacity=1_000_000)
        self.book = FakeBook()
        self.broker = PaperBroker(broker_settings(slippage_bps=2.0), risk_settings(), self.bus,
                                  self.clock, self.book, symbols=SYMBOLS)
        self.broker.open_account("p", CAPITAL)
        self.mid = dict(BASE)
        self.next_funding = dict.fromkeys(SYMBOLS, T0 + 28_800)
        self.fees = self.realized = self.funding = 0.0
        self.last_snapshot: AccountSnapshot | None = None
        for s in SYMBOLS:
            self.tick(s, self.mid[s])

    def tick(self, s: str, mid: float) -> None:
        self.mid[s] = mid
        half = mid * 0.00005
        self.book.set(s, mid - half, mid + half, mid)
        now = self.clock.time()
        self.broker.on_market(book_ticker(s, mid - half, mid + half, now))
        self.broker.on_market(mark_price(s, mid, next_funding=self.next_funding[s], t=now))

    def run(self, op: tuple) -> None:
        kind, s = op[0], op[1]
        self.clock.set_time(self.clock.time() + 1)
        if kind == "open":
            _, _, action, size, lev, sl, tp = op
            price = self.mid[s]
            sign = 1 if action == "open_long" else -1
            a = Action(symbol=s, action=action, size_usdt=size, leverage=lev,
                       stop_loss=price * (1 - sign * sl) if sl else None,
                       take_profit=price * (1 + sign * tp) if tp and sign * tp < 1 else None)
            self.broker.execute("p", [a], "c", snapshot_of(self.book))
        elif kind == "close":
            self.broker.execute("p", [Action(symbol=s, action="close", size_usdt=op[2])], "c",
                                snapshot_of(self.book))
        elif kind == "move":
            self.tick(s, max(self.mid[s] * (1 + op[2]), 0.01))
        else:  # funding: a MarkPrice before the funding time, then one after it
            when, mid = self.next_funding[s], self.mid[s]
            self.broker.on_market(mark_price(s, mid, rate=op[2], next_funding=when,
                                             t=self.clock.time()))
            self.clock.set_time(when + 1)
            self.next_funding[s] = when + 28_800
            self.broker.on_market(mark_price(s, mid, rate=0.0001, next_funding=when + 28_800,
                                             t=when + 1))
        self.collect()

    def collect(self) -> None:
        for e in self.sub.drain():
            if isinstance(e, OrderFilled):
                assert e.qty > 0 and abs(e.notional - e.qty * e.price) < 1e-6
                self.fees += e.fee
                self.realized += e.realized_pnl
            elif isinstance(e, FundingPaid):
                self.funding += e.amount
            else:
                self.last_snapshot = e

    def check(self) -> None:
        acc = self.broker.accounts["p"]
        upnl = sum(p.sign * p.qty * (self.mid[s] - p.entry_price)
                   for s, p in acc.positions.items())
        ledger = CAPITAL + self.realized - self.fees - self.funding
        equity = acc.equity(self.mid)
        assert abs(equity - (acc.cash + acc.margin() + upnl)) < CENT
        assert abs(equity - (ledger + upnl)) < CENT
        assert abs(acc.fees - self.fees) < CENT and abs(acc.funding - self.funding) < CENT
        assert abs(acc.realized_pnl - self.realized) < CENT
        assert acc.cash >= -CENT
        for s, p in acc.positions.items():
            assert p.margin + p.unrealized(self.mid[s]) >= -CENT, f"{s} past bankruptcy"
        assert equity >= -CENT
        snap = self.last_snapshot
        if snap is not None:
            assert abs(snap.equity - (snap.cash + snap.margin + snap.unrealized_pnl)) < CENT


@settings(max_examples=300, deadline=None)
@given(ops)
def test_ledger_identities_hold_after_every_step(steps: list[tuple]) -> None:
    h = Harness()
    for op in steps:
        h.run(op)
        h.check()
    for s in list(h.broker.accounts["p"].positions):
        h.broker.execute("p", [Action(symbol=s, action="close")], "end", None)
    h.collect()
    acc = h.broker.accounts["p"]
    assert acc.positions == {} and acc.margin() == 0
    assert abs(acc.cash - (CAPITAL + h.realized - h.fees - h.funding)) < CENT
    assert abs(acc.cash - (CAPITAL + acc.realized_pnl - acc.fees - acc.funding)) < CENT


@settings(max_examples=100, deadline=None)
@given(ops)
def test_snapshot_then_restore_rebuilds_the_same_account(steps: list[tuple]) -> None:
    h = Harness()
    for op in steps:
        h.run(op)
    first = h.broker.snapshot("p", "cycle", "c")
    other = PaperBroker(h.broker.settings, h.broker.risk.settings, Bus(), h.clock, h.book,
                        symbols=SYMBOLS)
    other.marks.copy_from(h.broker.marks)
    other.restore("p", {f: getattr(first, f) for f in first.__slots__})  # type: ignore[attr-defined]
    assert other.accounts["p"] == h.broker.accounts["p"]
    again = other.snapshot("p", "cycle", "c")
    assert _fields(again) == _fields(h.broker.snapshot("p", "cycle", "c"))


def _fields(snap: AccountSnapshot) -> dict:
    return {f: getattr(snap, f) for f in snap.__slots__ if f not in ("id",)}  # type: ignore[attr-defined]
