"""The risk manager: each rule refuses the action it should, and no other rule fires.

Defaults: equity 10,000 USDT, max leverage 10, one position ≤ 50 % of equity, all positions
≤ 300 %, 6 positions, stops ≥ 0.1 % away, daily loss 10 %, max drawdown 40 %. BTCUSDT trades at
60,000 (min notional 100), ETHUSDT at 3,000 (min notional 20), no spread, no slippage.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.bus import Bus
from engine.clock import SimClock
from engine.decision import Action, Decision
from engine.paper.broker import PaperBroker
from engine.paper.risk import RULES
from tests.support.broker import T0, FakeBook, broker_settings, risk_settings, snapshot_of

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def make(**risk: float) -> tuple[PaperBroker, FakeBook]:
    book = FakeBook()
    book.set("BTCUSDT", 60_000.0)
    book.set("ETHUSDT", 3_000.0)
    book.set("SOLUSDT", 150.0)
    broker = PaperBroker(broker_settings(), risk_settings(**risk), Bus(), SimClock(T0), book,
                         symbols=SYMBOLS)
    broker.open_account("t", 10_000.0)
    return broker, book


def review(broker: PaperBroker, book: FakeBook, *actions: Action,
           stale: tuple[str, ...] = ()) -> tuple[list[Action], list[str]]:
    approved, rejected = broker.review("t", Decision(actions=actions),
                                       snapshot_of(book, stale=stale), T0, "c1")
    return approved, [r.rule for r in rejected]


def act(action: str = "open_long", symbol: str = "BTCUSDT", size: float | None = 3_000,
        lev: int | None = 5, **kw: float) -> Action:
    return Action(symbol=symbol, action=action, size_usdt=size, leverage=lev, **kw)  # type: ignore[arg-type]


def hold_eth(broker: PaperBroker, size: float, lev: int = 1, side: str = "open_long") -> None:
    broker.execute("t", [act(side, "ETHUSDT", size, lev)], "c0", None)


def stopped(b: PaperBroker) -> None:
    b.accounts["t"].state.stopped = True


def suspended(b: PaperBroker) -> None:
    b.accounts["t"].state.suspended_until = T0 + 3_600


# (rule, set-up of the account, the one action that breaks exactly that rule, risk settings)
CASES: list[tuple[str, Callable[[PaperBroker], None] | None, Action, dict]] = [
    ("unknown_symbol", None, act(symbol="FOOUSDT"), {}),
    ("unknown_action", None, Action.model_construct(symbol="BTCUSDT", action="buy",
                                                    size_usdt=3_000.0, leverage=5), {}),
    ("max_drawdown", stopped, act(), {}),
    ("daily_loss_limit", suspended, act(), {}),
    ("price_stale", None, act(symbol="SOLUSDT", size=300), {}),  # SOLUSDT stale below
    ("leverage_above_max", None, act(lev=11), {}),
    ("stop_wrong_side", None, act(stop_loss=60_500.0), {}),
    ("stop_wrong_side", None, act("open_short", stop_loss=59_500.0), {}),
    ("take_profit_wrong_side", None, act(take_profit=59_000.0), {}),
    ("take_profit_wrong_side", None, act("open_short", take_profit=61_000.0), {}),
    ("stop_too_close", None, act(stop_loss=59_970.0), {}),  # 0.05 % away
    ("take_profit_too_close", None, act("open_short", take_profit=59_950.0), {}),  # 0.083 %
    ("no_position", None, act("close", size=None, lev=None), {}),
    ("no_position", None, act("hold", size=None, lev=None, stop_loss=50_000.0), {}),
    ("min_notional", None, act(size=90), {}),
    ("min_notional", None, act(size=None), {}),
    ("max_open_positions", lambda b: hold_eth(b, 1_500), act(), {"max_open_positions": 1}),
    ("position_too_large", None, act(size=6_000), {}),
    ("position_too_large", lambda b: hold_eth(b, 3_000), act(symbol="ETHUSDT", size=2_100), {}),
    ("exposure_cap", lambda b: hold_eth(b, 4_000), act(), {"max_total_exposure_pct": 60}),
    ("insufficient_margin",
     lambda b: b.execute("t", [act(symbol="ETHUSDT", size=4_500, lev=1),
                               act(symbol="SOLUSDT", size=4_500, lev=1)], "c0", None),
     act(lev=1), {}),
]


@pytest.mark.parametrize(("rule", "setup", "action", "limits"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_refuses_what_it_should_and_nothing_else_fires(rule, setup, action,
                                                                 limits) -> None:
    broker, book = make(**limits)
    if setup is not None:
        setup(broker)
    stale = ("SOLUSDT",) if rule == "price_stale" else ()
    approved, rules = review(broker, book, action, stale=stale)
    assert (approved, rules) == ([], [rule])


def test_every_rule_is_exercised_above() -> None:
    assert {c[0] for c in CASES} == set(RULES)


def test_a_decision_within_every_limit_passes() -> None:
    broker, book = make()
    hold_eth(broker, 1_000)
    approved, rules = review(
        broker, book,
        act(stop_loss=57_000.0, take_profit=66_000.0),
        act("open_short", "SOLUSDT", 300, 2, stop_loss=160.0, take_profit=140.0),
        act("close", "ETHUSDT", 500, None),
        act("hold", "ETHUSDT", None, None, stop_loss=2_900.0))
    assert rules == [] and len(approved) == 4


def test_a_plain_hold_is_dropped_silently() -> None:
    broker, book = make()
    assert review(broker, book, act("hold", size=None, lev=None)) == ([], [])


def test_actions_are_checked_cumulatively_within_a_decision() -> None:
    broker, book = make()
    approved, rules = review(broker, book, act(size=3_000), act(size=3_000))
    # 3,000 alone is within 50 % of equity; the second brings the position to 6,000
    assert len(approved) == 1 and rules == ["position_too_large"]


def test_cash_is_spent_cumulatively_within_a_decision() -> None:
    broker, book = make()
    approved, rules = review(broker, book, act(symbol="ETHUSDT", size=4_500, lev=1),
                             act(symbol="SOLUSDT", size=4_500, lev=1), act(size=3_000, lev=1))
    assert len(approved) == 2 and rules == ["insufficient_margin"]


def test_a_close_frees_room_for_a_later_open_in_the_same_decision() -> None:
    broker, book = make(max_open_positions=1)
    hold_eth(broker, 1_500)
    approved, rules = review(broker, book, act("close", "ETHUSDT", None, None), act())
    assert rules == [] and len(approved) == 2


def test_a_flip_is_checked_as_close_then_open() -> None:
    broker, book = make(max_open_positions=1)
    hold_eth(broker, 4_500, lev=1, side="open_short")  # cash left about 5,498
    # the new long needs 5,000 of margin at 1x: only possible with the short's margin back
    approved, rules = review(broker, book, act("open_long", "ETHUSDT", 5_000, 1))
    assert rules == [] and len(approved) == 1


def test_stopped_or_suspended_traders_may_still_close_and_move_stops() -> None:
    for block in (stopped, suspended):
        broker, book = make()
        hold_eth(broker, 1_500)
        block(broker)
        approved, rules = review(broker, book,
                                 act("hold", "ETHUSDT", None, None, stop_loss=2_900.0),
                                 act("close", "ETHUSDT", None, None), act("open_long"))
        assert len(approved) == 2
        assert rules == ["max_drawdown" if block is stopped else "daily_loss_limit"]


def test_a_symbol_without_a_quote_is_stale() -> None:
    broker, book = make()
    del book.quotes["BTCUSDT"]
    assert review(broker, book, act()) == ([], ["price_stale"])


def test_stops_on_a_hold_are_checked_against_the_position_side() -> None:
    broker, book = make()
    hold_eth(broker, 1_500, side="open_short")
    _, rules = review(broker, book, act("hold", "ETHUSDT", None, None, stop_loss=2_900.0))
    assert rules == ["stop_wrong_side"]


def test_losing_ten_percent_in_a_day_suspends_the_trader_until_midnight() -> None:
    clock = SimClock(T0 + 3_600)
    book = FakeBook()
    book.set("ETHUSDT", 3_000.0)
    broker = PaperBroker(broker_settings(), risk_settings(), Bus(), clock, book, symbols=SYMBOLS)
    broker.open_account("t", 10_000.0)
    broker.execute("t", [act(symbol="ETHUSDT", size=4_500, lev=1)], "c0", None)
    book.set("ETHUSDT", 2_300.0)  # 1.5 ETH * -700 = -1,050: -10.5 % today
    broker.mark_all()
    approved, rejected = broker.review("t", Decision(actions=(act(symbol="ETHUSDT", size=100),)),
                                       None, clock.time(), "c1")
    assert [r.rule for r in rejected] == ["daily_loss_limit"]
    assert broker.accounts["t"].state.suspended_until == T0 + 86_400
    # after midnight the day's baseline is the new equity and the trader may trade again
    clock.set_time(T0 + 86_400 + 60)
    approved, rejected = broker.review("t", Decision(actions=(act(symbol="ETHUSDT", size=100),)),
                                       None, clock.time(), "c2")
    assert rejected == [] and len(approved) == 1
    assert broker.accounts["t"].state.sod_equity == pytest.approx(8_947.75)
