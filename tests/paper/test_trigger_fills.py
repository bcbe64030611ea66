"""Stop-loss and take-profit fills on constructed price paths: a take-profit fills at exactly its
level (never better), a stop-loss at its level or the first path point beyond it (whichever is
worse); both pay the taker fee and slippage, and slippage grows with the order's notional."""

from __future__ import annotations

import random

import pytest

from engine.broker_settings import BrokerSettings
from engine.bus import Bus
from engine.clock import SimClock
from engine.decision import Action
from engine.events import OrderFilled
from engine.market.candles import Candle
from engine.market.history import _book_path
from engine.paper.broker import PaperBroker
from tests.support.broker import FakeBook, book_ticker, broker_settings, risk_settings, snapshot_of


def make(clock: SimClock, bus: Bus, **kw: float) -> tuple[PaperBroker, FakeBook, object]:
    book = FakeBook()
    book.set("ETHUSDT", 3_000.0, 3_000.0)
    broker = PaperBroker(broker_settings(**kw), risk_settings(max_position_pct=1000.0), bus,
                         clock, book, symbols=["ETHUSDT", "BTCUSDT"])
    sub = bus.subscribe("test", (OrderFilled,), capacity=10_000)
    return broker, book, sub


def open_(broker: PaperBroker, book: FakeBook, trader: str, action: str, size: float,
          lev: int = 5, **kw: float) -> None:
    if trader not in broker.accounts:
        broker.open_account(trader, 100_000.0)
    a = Action.model_validate({"symbol": "ETHUSDT", "action": action, "size_usdt": size,
                               "leverage": lev, **kw})
    broker.execute(trader, [a], "c1", snapshot_of(book))


def walk(broker: PaperBroker, path: list[tuple[float, float]]) -> None:
    for bid, ask in path:
        broker.on_market(book_ticker("ETHUSDT", bid, ask))


def trigger_fills(sub: object) -> list[OrderFilled]:
    return [e for e in sub.drain() if isinstance(e, OrderFilled)  # type: ignore[attr-defined]
            and e.reason in ("stop_loss", "take_profit")]


def test_long_take_profit_fills_at_its_level_when_the_path_jumps_beyond_it(
        clock: SimClock, bus: Bus) -> None:
    broker, book, sub = make(clock, bus)
    open_(broker, book, "a", "open_long", 3_000, take_profit=3_100.0)
    walk(broker, [(3_050.0, 3_050.5), (3_180.0, 3_180.5)])  # the bid jumps 80 past the level
    (fill,) = trigger_fills(sub)
    assert (fill.reason, fill.side, fill.price) == ("take_profit", "sell", 3_100.0)


def test_short_take_profit_fills_at_its_level_when_the_path_gaps_below(
        clock: SimClock, bus: Bus) -> None:
    broker, book, sub = make(clock, bus)
    open_(broker, book, "a", "open_short", 3_000, take_profit=2_900.0)
    walk(broker, [(2_700.0, 2_700.5)])
    (fill,) = trigger_fills(sub)
    assert (fill.reason, fill.side, fill.price) == ("take_profit", "buy", 2_900.0)


def test_long_stop_fills_at_the_first_point_beyond_it_on_a_gap(clock: SimClock, bus: Bus) -> None:
    broker, book, sub = make(clock, bus)
    open_(broker, book, "a", "open_long", 3_000, stop_loss=2_900.0)
    walk(broker, [(2_950.0, 2_950.5), (2_850.0, 2_850.5), (2_800.0, 2_800.5)])
    (fill,) = trigger_fills(sub)
    assert (fill.reason, fill.side, fill.price) == ("stop_loss", "sell", 2_850.0)


def test_long_stop_touched_exactly_fills_at_its_level(clock: SimClock, bus: Bus) -> None:
    broker, book, sub = make(clock, bus)
    open_(broker, book, "a", "open_long", 3_000, stop_loss=2_900.0)
    walk(broker, [(2_900.0, 2_900.5)])
    (fill,) = trigger_fills(sub)
    assert fill.price == 2_900.0


def test_short_stop_fills_at_the_ask_beyond_it(clock: SimClock, bus: Bus) -> None:
    broker, book, sub = make(clock, bus)
    open_(broker, book, "a", "open_short", 3_000, stop_loss=3_100.0)
    walk(broker, [(3_149.5, 3_150.0)])
    (fill,) = trigger_fills(sub)
    assert (fill.reason, fill.side, fill.price) == ("stop_loss", "buy", 3_150.0)


def test_trigger_fills_pay_the_taker_fee_and_slippage_against_the_trader(
        clock: SimClock, bus: Bus) -> None:
    broker, book, sub = make(clock, bus, slippage_bps=2.0, taker_fee=0.0005)
    open_(broker, book, "a", "open_long", 3_000, take_profit=3_100.0)
    open_(broker, book, "b", "open_short", 3_000, stop_loss=3_100.0)
    sub.drain()  # type: ignore[attr-defined]
    walk(broker, [(3_119.5, 3_120.0)])
    fills = {f.trader: f for f in trigger_fills(sub)}
    # long take-profit: 3,100 x (1 - 2 bp) = 3,099.38 (down to the 0.01 tick): below its level
    assert fills["a"].price == 3_099.38
    # short stop: the ask 3,120 beyond the stop, x (1 + 2 bp) = 3,120.624 up to the tick
    assert fills["b"].price == 3_120.63
    for f in fills.values():
        assert f.fee == pytest.approx(f.qty * f.price * 0.0005)


def test_slippage_grows_with_the_square_root_of_notional() -> None:
    s = BrokerSettings(slippage_bps=1.0, impact_bps=2.0, impact_notional=100_000.0)
    assert s.slippage_for(100_000.0) == pytest.approx(3.0)
    assert s.slippage_for(400_000.0) == pytest.approx(5.0)
    assert s.slippage_for(100.0) == pytest.approx(1.0 + 2.0 * 0.001 ** 0.5)
    assert BrokerSettings(slippage_bps=1.0).slippage_for(1e9) == 1.0  # impact off by default


def test_a_10x_position_fills_worse_than_a_100_usdt_one(clock: SimClock, bus: Bus) -> None:
    broker, book, sub = make(clock, bus, slippage_bps=1.0, impact_bps=5.0,
                             impact_notional=10_000.0)
    open_(broker, book, "small", "open_long", 100, lev=1)
    open_(broker, book, "big", "open_long", 90_000, lev=10)
    opens = {f.trader: f for f in sub.drain()  # type: ignore[attr-defined]
             if isinstance(f, OrderFilled)}
    # small: 1 + 5 x sqrt(0.01) = 1.5 bp -> 3,000.45; big: 1 + 5 x sqrt(9) = 16 bp -> 3,004.8
    assert opens["small"].price == 3_000.45
    assert opens["big"].price == 3_004.8
    for trader in ("small", "big"):  # both move their stop to 2,900
        broker.execute(trader, [Action(symbol="ETHUSDT", action="adjust", stop_loss=2_900.0)],
                       "c2", snapshot_of(book))
    walk(broker, [(2_900.0, 2_900.5)])
    stops = {f.trader: f for f in trigger_fills(sub)}
    assert stops["big"].price < stops["small"].price < 2_900.0


@pytest.mark.parametrize("seed", range(20))
def test_no_take_profit_fills_beyond_its_level_on_backtest_minute_paths(
        clock: SimClock, bus: Bus, seed: int) -> None:
    """Random 1m candles walked as the backtest walks them (open, low/high, high/low, close)."""
    rng = random.Random(seed)
    broker, book, sub = make(clock, bus, slippage_bps=0.0)
    open_(broker, book, "long", "open_long", 3_000,
          take_profit=round(3_000 + rng.uniform(1, 30), 2),
          stop_loss=round(3_000 - rng.uniform(1, 30), 2))
    book.set("ETHUSDT", 3_000.0, 3_000.0)
    open_(broker, book, "short", "open_short", 3_000,
          take_profit=round(3_000 - rng.uniform(1, 30), 2),
          stop_loss=round(3_000 + rng.uniform(1, 30), 2))
    levels = {t: (a.positions["ETHUSDT"].take_profit, a.positions["ETHUSDT"].stop_loss)
              for t, a in broker.accounts.items()}
    price = 3_000.0
    for minute in range(30):
        o = price
        c = o + rng.gauss(0, 15)
        hi, lo = max(o, c) + abs(rng.gauss(0, 10)), min(o, c) - abs(rng.gauss(0, 10))
        candle = Candle(minute * 60.0, o, hi, lo, c, 1.0)
        walk(broker, [(round(p, 2), round(p, 2)) for p in _book_path(candle)])
        price = c
    fills = trigger_fills(sub)
    assert fills  # the paths do reach the levels
    for f in fills:
        tp, sl = levels[f.trader]
        assert sl is not None
        if f.reason == "take_profit":
            assert f.price == tp
        elif f.trader == "long":
            assert f.price <= sl
        else:
            assert f.price >= sl
