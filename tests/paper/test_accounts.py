"""Account arithmetic, checked by hand against Binance's published USD-M formulas.

Binance (USD-M, isolated margin, one-way mode):
  Unrealized PNL = position size * direction * (mark price - entry price)
  Initial margin = notional / leverage;  taker fee = notional * 0.05 %
  Liquidation price = (WB + cumB - side * size * EP) / (size * MMR - side * size)
      with WB = the isolated margin, cumB = 0 in the first bracket, side = +1 long / -1 short
  Funding fee = size * mark price * funding rate (longs pay when the rate is positive)
"""

from __future__ import annotations

import pytest

from engine.paper.accounts import (
    Account,
    AccountError,
    AccountState,
    Position,
    liquidation_price,
    unrealized_pnl,
)
from engine.paper.rounding import ceil_to_step, fill_price, floor_to_step

CENT = 0.005
FEE = 0.0005


def new_account(capital: float = 10_000.0) -> Account:
    return Account.new("t", capital, 0.0)


def test_long_worked_example_pnl_fees_and_liquidation_price() -> None:
    acc = new_account()
    fill = acc.open("BTCUSDT", "long", 0.5, 60_000.0, leverage=10, fee_rate=FEE, mmr=0.004, now=0)
    # notional = 0.5 * 60,000 = 30,000; initial margin = 30,000 / 10 = 3,000
    # fee = 30,000 * 0.0005 = 15;  cash = 10,000 - 3,000 - 15 = 6,985
    assert fill.fee == pytest.approx(15.0)
    assert acc.cash == pytest.approx(6_985.0)
    pos = acc.positions["BTCUSDT"]
    assert pos.margin == pytest.approx(3_000.0)
    # LP = (3,000 + 0 - 1 * 0.5 * 60,000) / (0.5 * 0.004 - 1 * 0.5)
    #    = (-27,000) / (-0.498) = 54,216.867469...
    # check: at 54,216.87 uPnL = 0.5 * (54,216.87 - 60,000) = -2,891.57, so margin + uPnL =
    # 108.43 = maintenance margin 0.5 * 54,216.87 * 0.004 = 108.43
    assert pos.liquidation_price == pytest.approx(54_216.867469, abs=1e-5)
    # at mark 63,000: uPnL = 0.5 * 1 * (63,000 - 60,000) = +1,500
    marks = {"BTCUSDT": 63_000.0}
    assert acc.unrealized(marks) == pytest.approx(1_500.0)
    # equity = cash + margin + uPnL = 6,985 + 3,000 + 1,500 = 11,485
    assert acc.equity(marks) == pytest.approx(11_485.0)
    out = acc.close("BTCUSDT", None, 63_000.0, fee_rate=FEE)
    # closing fee = 0.5 * 63,000 * 0.0005 = 15.75; realized PnL = 1,500
    # cash = 6,985 + 3,000 + 1,500 - 15.75 = 11,469.25 = 10,000 + 1,500 - (15 + 15.75)
    assert out.realized_pnl == pytest.approx(1_500.0)
    assert out.fee == pytest.approx(15.75)
    assert acc.cash == pytest.approx(11_469.25)
    assert acc.fees == pytest.approx(30.75)
    assert out.closed is not None and out.closed.net == pytest.approx(1_469.25)
    assert acc.positions == {}


def test_short_worked_example_pnl_fees_and_liquidation_price() -> None:
    acc = new_account()
    acc.open("ETHUSDT", "short", 2.0, 3_000.0, leverage=5, fee_rate=FEE, mmr=0.004, now=0)
    # notional = 2 * 3,000 = 6,000; margin = 6,000 / 5 = 1,200; fee = 6,000 * 0.0005 = 3
    # cash = 10,000 - 1,200 - 3 = 8,797
    assert acc.cash == pytest.approx(8_797.0)
    pos = acc.positions["ETHUSDT"]
    # LP = (1,200 + 0 - (-1) * 2 * 3,000) / (2 * 0.004 - (-1) * 2) = 7,200 / 2.008
    #    = 3,585.657370...
    # check: at 3,585.66 uPnL = 2 * -1 * (3,585.66 - 3,000) = -1,171.31, margin + uPnL = 28.69
    #        = maintenance margin 2 * 3,585.66 * 0.004 = 28.69
    assert pos.liquidation_price == pytest.approx(3_585.657370, abs=1e-5)
    # at mark 2,900: uPnL = 2 * -1 * (2,900 - 3,000) = +200
    assert acc.unrealized({"ETHUSDT": 2_900.0}) == pytest.approx(200.0)
    out = acc.close("ETHUSDT", None, 2_900.0, fee_rate=FEE)
    # fee = 2 * 2,900 * 0.0005 = 2.90; cash = 8,797 + 1,200 + 200 - 2.90 = 10,194.10
    assert out.side == "buy"
    assert out.fee == pytest.approx(2.90)
    assert acc.cash == pytest.approx(10_194.10)
    assert acc.realized_pnl == pytest.approx(200.0)


def test_liquidation_price_formula_matches_maintenance_margin_for_both_sides() -> None:
    for side, entry in (("long", 100.0), ("short", 100.0)):
        qty, margin, mmr = 3.0, 30.0, 0.01  # 10x
        lp = liquidation_price(side, qty, entry, margin, mmr)
        # at LP, margin + uPnL equals the maintenance margin qty * LP * MMR
        assert margin + unrealized_pnl(side, qty, entry, lp) == pytest.approx(qty * lp * mmr)


def test_one_x_long_can_never_be_liquidated() -> None:
    # margin = the whole notional: LP = (100 - 100) / (...) = 0
    assert liquidation_price("long", 1.0, 100.0, 100.0, 0.004) == 0.0
    pos = Position("X", "long", 1.0, 100.0, 1, 100.0, 0.004)
    assert not pos.liquidated_at(0.0001)


def test_funding_long_pays_short_receives_when_rate_positive() -> None:
    acc = new_account()
    acc.open("BTCUSDT", "long", 0.5, 60_000.0, leverage=10, fee_rate=FEE, mmr=0.004, now=0)
    acc.open("ETHUSDT", "short", 2.0, 3_000.0, leverage=5, fee_rate=FEE, mmr=0.004, now=0)
    # long: 0.5 * 61,000 * 0.0001 = 3.05 paid; short: -(2 * 3,100 * 0.0001) = -0.62 (received)
    assert acc.apply_funding("BTCUSDT", 0.0001, 61_000.0) == pytest.approx(3.05)
    assert acc.apply_funding("ETHUSDT", 0.0001, 3_100.0) == pytest.approx(-0.62)
    assert acc.funding == pytest.approx(2.43)
    # funding moves the isolated margin, and with it the liquidation price
    btc = acc.positions["BTCUSDT"]
    assert btc.margin == pytest.approx(2_996.95)
    assert btc.liquidation_price == pytest.approx((30_000 - 2_996.95) / (0.5 * 0.996))
    assert abs(acc.ledger_gap()) < CENT


def test_liquidation_loses_the_whole_margin_and_leaves_cash_alone() -> None:
    acc = new_account()
    acc.open("BTCUSDT", "long", 0.5, 60_000.0, leverage=10, fee_rate=FEE, mmr=0.004, now=0)
    out = acc.liquidate("BTCUSDT", 54_100.0)
    # price loss = 0.5 * (54,100 - 60,000) = -2,950; the 50 of margin it leaves is the
    # liquidation clearance fee, so the whole 3,000 margin is gone and cash stays 6,985
    assert out.realized_pnl == pytest.approx(-2_950.0)
    assert out.fee == pytest.approx(50.0)
    assert acc.cash == pytest.approx(6_985.0)
    assert acc.equity({}) == pytest.approx(6_985.0)
    assert acc.state.liquidations == 1 and acc.state.trades == 1 and acc.state.wins == 0
    assert abs(acc.ledger_gap()) < CENT


def test_liquidation_past_bankruptcy_loses_no_more_than_the_margin() -> None:
    acc = new_account()
    acc.open("BTCUSDT", "long", 0.5, 60_000.0, leverage=10, fee_rate=FEE, mmr=0.004, now=0)
    out = acc.liquidate("BTCUSDT", 50_000.0)  # a gap far below the bankruptcy price 54,000
    assert out.realized_pnl == pytest.approx(-3_000.0)
    assert out.fee == 0.0
    assert acc.cash == pytest.approx(6_985.0)


def test_adding_averages_the_entry_and_keeps_the_leverage() -> None:
    acc = new_account()
    acc.open("ETHUSDT", "long", 1.0, 3_000.0, leverage=5, fee_rate=0.0, mmr=0.004, now=0)
    acc.open("ETHUSDT", "long", 1.0, 3_300.0, leverage=2, fee_rate=0.0, mmr=0.004, now=1)
    pos = acc.positions["ETHUSDT"]
    # entry = (1 * 3,000 + 1 * 3,300) / 2 = 3,150; margin = 600 + 660 (the position's 5x)
    assert pos.entry_price == pytest.approx(3_150.0)
    assert pos.qty == pytest.approx(2.0)
    assert pos.leverage == 5
    assert pos.margin == pytest.approx(1_260.0)


def test_reducing_books_pnl_and_releases_margin_pro_rata() -> None:
    acc = new_account()
    acc.open("ETHUSDT", "short", 4.0, 3_000.0, leverage=4, fee_rate=0.0, mmr=0.004, now=0)
    out = acc.close("ETHUSDT", 1.0, 2_800.0, fee_rate=0.0)
    # realized = 1 * -1 * (2,800 - 3,000) = +200; released margin = 3,000 * 1/4 = 750
    assert out.realized_pnl == pytest.approx(200.0)
    assert out.closed is None
    pos = acc.positions["ETHUSDT"]
    assert pos.qty == pytest.approx(3.0) and pos.margin == pytest.approx(2_250.0)
    assert pos.entry_price == 3_000.0
    assert acc.cash == pytest.approx(10_000 - 3_000 + 750 + 200)


def test_open_refuses_without_enough_cash_and_against_an_opposite_position() -> None:
    acc = new_account(1_000.0)
    with pytest.raises(AccountError) as err:
        acc.open("BTCUSDT", "long", 1.0, 60_000.0, leverage=10, fee_rate=FEE, mmr=0.004, now=0)
    assert err.value.rule == "insufficient_margin"
    acc.open("ETHUSDT", "long", 0.1, 3_000.0, leverage=1, fee_rate=FEE, mmr=0.004, now=0)
    with pytest.raises(AccountError):
        acc.open("ETHUSDT", "short", 0.1, 3_000.0, leverage=1, fee_rate=FEE, mmr=0.004, now=0)
    assert acc.cash == pytest.approx(1_000 - 300 - 0.15)


def test_rounding_quantities_down_and_prices_against_the_taker() -> None:
    assert floor_to_step(0.0399999, 0.001) == 0.039
    assert floor_to_step(0.3, 0.1) == 0.3  # no 0.29999 float artefacts
    assert floor_to_step(17.9, 1) == 17
    assert ceil_to_step(100.01, 0.1) == 100.1
    # buy: 100,000 * (1 + 2 bp) = 100,020 → already on the 0.1 tick
    assert fill_price(100_000.0, True, 2.0, 0.1) == 100_020.0
    # sell: 0.12345 * (1 - 1 bp) = 0.123437655 → down to the 0.00001 tick: 0.12343
    assert fill_price(0.12345, False, 1.0, 0.00001) == 0.12343


def test_state_round_trips_through_its_dict() -> None:
    acc = new_account()
    acc.state.funding_settled["BTCUSDT"] = 123.0
    acc.state.returns.add(10_000, 0)
    acc.state.returns.add(10_100, 300)
    acc.remember_fill({"symbol": "BTCUSDT", "qty": 1.0})
    again = AccountState.from_dict(acc.state.to_dict())
    assert list(again.returns.recent) == []  # the series is rebuilt from the cycle snapshots
    again.returns.restore_series(acc.state.returns.recent)
    assert again == acc.state
    pos = Position("X", "short", 1.5, 10.0, 3, 5.0, 0.01, stop_loss=11.0, open_reason="why")
    assert Position.from_dict({**pos.to_dict(), "mark": 9.0}) == pos
