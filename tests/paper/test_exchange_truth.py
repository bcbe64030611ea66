"""Maintenance margins from Binance's brackets, and funding missed while the engine was down."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from engine.bus import Bus
from engine.clock import SimClock
from engine.decision import Action
from engine.events import FundingPaid
from engine.market.binance import parse_exchange_info
from engine.market.fakebinance import FakeBinance
from engine.paper.accounts import Position
from engine.paper.broker import PaperBroker
from engine.paper.funding import binance_funding_history, settle_missed_funding
from engine.settings import FeedSettings, MarginBracket, SymbolFilter, load_settings
from tests.support.broker import T0, FakeBook, broker_settings, risk_settings, snapshot_of

BTC_TIERS = (MarginBracket(notional_cap=50_000, rate=0.004),
             MarginBracket(notional_cap=250_000, rate=0.005),
             MarginBracket(notional_cap=1_000_000, rate=0.01))
BTC = SymbolFilter(step_size=0.001, tick_size=0.1, min_notional=100.0, brackets=BTC_TIERS)


def reconciles(broker: PaperBroker, trader: str, marks: dict[str, float]) -> None:
    acc = broker.accounts[trader]
    parts = acc.cash + acc.margin() + acc.unrealized(marks)
    assert acc.equity(marks) == pytest.approx(parts, abs=0.005)
    ledger = acc.capital + acc.realized_pnl - acc.fees - acc.funding
    assert acc.cash + acc.margin() == pytest.approx(ledger, abs=0.005)


def btc_broker(clock: SimClock, bus: Bus, price: float = 100_000.0, **kw) -> tuple:
    book = FakeBook()
    book.set("BTCUSDT", price, t=clock.time())
    broker = PaperBroker(broker_settings(symbols={"BTCUSDT": BTC}, taker_fee=0.0), risk_settings(),
                         bus, clock, book, symbols=["BTCUSDT"], **kw)
    broker.open_account("a", 1_000_000.0)
    return broker, book


def maintenance_at(f: SymbolFilter, notional: float) -> float:
    """Binance's maintenance margin of a position of `notional`: the tier it falls in."""
    tier = next((b for b in f.brackets if notional <= b.notional_cap), f.brackets[-1])
    return notional * tier.rate - (tier.maint_amount or 0.0)


def test_maintenance_amounts_follow_binances_cumulative_formula() -> None:
    assert [b.maint_amount for b in BTC.brackets] == [0.0, 50.0, 1_300.0]
    assert BTC.tiers() == ((0.004, 0.0), (0.005, 50.0), (0.01, 1_300.0))
    assert SymbolFilter(maint_margin_rate=0.005).tiers() == ((0.005, 0.0),)
    # continuous at every cap: the tier below and the tier above agree there
    assert 50_000 * 0.004 - 0.0 == pytest.approx(50_000 * 0.005 - 50.0)
    assert 250_000 * 0.005 - 50.0 == pytest.approx(250_000 * 0.01 - 1_300.0)


def test_brackets_must_ascend() -> None:
    with pytest.raises(ValueError, match="ascending"):
        SymbolFilter(brackets=(BTC_TIERS[1], BTC_TIERS[0]))
    with pytest.raises(ValueError, match="ascending rate"):
        SymbolFilter(brackets=(MarginBracket(notional_cap=1_000, rate=0.01),
                               MarginBracket(notional_cap=2_000, rate=0.005)))


def test_a_maintenance_amount_that_breaks_binances_formula_is_refused() -> None:
    with pytest.raises(ValueError, match="breaks Binance's formula"):
        SymbolFilter(brackets=(MarginBracket(notional_cap=50_000, rate=0.004),
                               MarginBracket(notional_cap=250_000, rate=0.005, maint_amount=5)))


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT",
                                    "DOGEUSDT"])
def test_default_settings_carry_binance_brackets_for_every_default_symbol(symbol: str) -> None:
    f = load_settings().broker.filter_for(symbol)
    assert len(f.brackets) >= 10  # every published tier, up to 1x leverage
    assert f.brackets[0].rate == f.maint_margin_rate  # the single rate is the first tier's
    assert f.brackets[-1].rate == 0.5
    for below, above in zip(f.brackets, f.brackets[1:], strict=False):
        cap = below.notional_cap  # maintenance margin is continuous at every cap
        assert maintenance_at(f, cap) == pytest.approx(
            cap * above.rate - (above.maint_amount or 0.0))


def test_default_btc_tiers_are_binances() -> None:
    f = load_settings().broker.filter_for("BTCUSDT")
    assert f.tiers()[:4] == ((0.004, 0.0), (0.005, 50.0), (0.0065, 950.0), (0.01, 11_450.0))
    assert f.brackets[0].notional_cap == 50_000 and f.brackets[-1].notional_cap == 1.8e9


def test_a_10x_btc_long_liquidates_at_the_first_bracket_not_the_legacy_2_5_percent(
        clock: SimClock, bus: Bus) -> None:
    broker, book = btc_broker(clock, bus)
    # exchangeInfo's legacy maintMarginPercent (2.5 for every symbol) must not move anything
    body = {"symbols": [{"symbol": "BTCUSDT", "maintMarginPercent": "2.5000", "filters": [
        {"filterType": "LOT_SIZE", "stepSize": "0.001"}]}]}
    broker.set_filters(parse_exchange_info(body))
    broker.execute("a", [Action(symbol="BTCUSDT", action="open_long", size_usdt=10_000.0,
                                leverage=10)], "c1", snapshot_of(book))
    pos = broker.accounts["a"].positions["BTCUSDT"]
    # (qty·entry - margin) / (qty·(1 - 0.004)) = 100,000 · 0.9 / 0.996
    assert (pos.maint_margin_rate, pos.maint_amount) == (0.004, 0.0)
    assert pos.liquidation_price == pytest.approx(90_361.45, abs=0.01)
    reconciles(broker, "a", {"BTCUSDT": 100_000.0})


def test_a_larger_position_uses_its_tier_and_maintenance_amount(clock: SimClock,
                                                               bus: Bus) -> None:
    broker, book = btc_broker(clock, bus)
    broker.execute("a", [Action(symbol="BTCUSDT", action="open_long", size_usdt=300_000.0,
                                leverage=10)], "c1", snapshot_of(book))
    pos = broker.accounts["a"].positions["BTCUSDT"]
    assert (pos.maint_margin_rate, pos.maint_amount) == (0.01, 1_300.0)
    qty, margin = pos.qty, pos.margin
    # Binance: LP = (WB + cumB - qty·entry) / (qty·MMR - qty), long
    expected = (margin + 1_300.0 - qty * 100_000.0) / (qty * 0.01 - qty)
    assert pos.liquidation_price == pytest.approx(expected)
    # maintenance margin at LP equals the margin left: WB + uPnL = N·MMR - cum
    lp = pos.liquidation_price
    assert margin + qty * (lp - 100_000.0) == pytest.approx(qty * lp * 0.01 - 1_300.0, abs=1e-6)
    # reducing below the tier's floor moves the position to the lower tier
    broker.execute("a", [Action(symbol="BTCUSDT", action="close", size_usdt=200_000.0)], "c2",
                   snapshot_of(book))
    pos = broker.accounts["a"].positions["BTCUSDT"]
    assert (pos.maint_margin_rate, pos.maint_amount) == (0.005, 50.0)
    reconciles(broker, "a", {"BTCUSDT": 100_000.0})


def open_btc(clock: SimClock, bus: Bus, action: str, size: float, leverage: int) -> Position:
    broker, book = btc_broker(clock, bus)
    broker.execute("a", [Action(symbol="BTCUSDT", action=action, size_usdt=size,
                                leverage=leverage)], "c1", snapshot_of(book))
    reconciles(broker, "a", {"BTCUSDT": 100_000.0})
    return broker.accounts["a"].positions["BTCUSDT"]


def balance_at(pos: Position, price: float) -> float:
    """Margin left (isolated wallet balance + unrealized PnL) at `price`."""
    return pos.margin + pos.unrealized(price)


def test_a_long_liquidates_in_the_tier_of_its_notional_at_the_liquidation_price(
        clock: SimClock, bus: Bus) -> None:
    # 60,000 USDT at entry is tier 2; at 2x the price halves before liquidation, and there the
    # notional (~30,000) is tier 1, whose terms Binance applies at that mark
    pos = open_btc(clock, bus, "open_long", 60_000.0, 2)
    lp = pos.liquidation_price
    assert pos.qty * lp <= 50_000
    assert (pos.maint_margin_rate, pos.maint_amount) == (0.004, 0.0)
    assert balance_at(pos, lp) == pytest.approx(maintenance_at(BTC, pos.qty * lp), abs=1e-6)
    # the tier of the notional at entry would have liquidated it at a different price
    entry_tier = (pos.margin + 50.0 - pos.qty * pos.entry_price) / (pos.qty * 0.005 - pos.qty)
    assert abs(entry_tier - lp) > 1.0


def test_a_short_liquidates_in_the_higher_tier_its_notional_grows_into(clock: SimClock,
                                                                       bus: Bus) -> None:
    # 40,000 USDT at entry is tier 1; at 2x the price rises ~50 % first: ~60,000, tier 2
    pos = open_btc(clock, bus, "open_short", 40_000.0, 2)
    lp = pos.liquidation_price
    assert 50_000 < pos.qty * lp <= 250_000
    assert (pos.maint_margin_rate, pos.maint_amount) == (0.005, 50.0)
    assert pos.margin - pos.qty * (lp - pos.entry_price) == pytest.approx(
        maintenance_at(BTC, pos.qty * lp), abs=1e-6)
    assert not pos.liquidated_at(lp - 1.0) and pos.liquidated_at(lp)


@pytest.mark.parametrize(("action", "size", "leverage"), [
    ("open_long", 10_000.0, 10), ("open_long", 300_000.0, 10), ("open_long", 260_000.0, 1),
    ("open_short", 45_000.0, 1), ("open_short", 300_000.0, 5), ("open_short", 900_000.0, 3)])
def test_margin_left_meets_the_maintenance_margin_exactly_at_the_liquidation_price(
        clock: SimClock, bus: Bus, action: str, size: float, leverage: int) -> None:
    pos = open_btc(clock, bus, action, size, leverage)
    lp = pos.liquidation_price
    if lp == 0.0:  # a 1x long is never liquidated: its margin covers the whole fall
        assert action == "open_long" and leverage == 1
        return
    assert balance_at(pos, lp) == pytest.approx(maintenance_at(BTC, pos.qty * lp), abs=1e-6)
    assert balance_at(pos, pos.entry_price) > maintenance_at(BTC, pos.notional(pos.entry_price))


def test_funding_moves_the_liquidation_price_within_binances_tiers(clock: SimClock,
                                                                   bus: Bus) -> None:
    broker, book = btc_broker(clock, bus)
    broker.execute("a", [Action(symbol="BTCUSDT", action="open_short", size_usdt=40_000.0,
                                leverage=2)], "c1", snapshot_of(book))
    acc = broker.accounts["a"]
    before = acc.positions["BTCUSDT"].liquidation_price
    acc.apply_funding("BTCUSDT", 0.01, 100_000.0)  # a short receives: more margin, a higher price
    pos = acc.positions["BTCUSDT"]
    assert pos.liquidation_price > before
    lp = pos.liquidation_price
    assert pos.margin - pos.qty * (lp - pos.entry_price) == pytest.approx(
        maintenance_at(BTC, pos.qty * lp), abs=1e-6)
    reconciles(broker, "a", {"BTCUSDT": 100_000.0})


# ---------------------------------------------------------------- funding missed while down

EIGHT_HOURS = 8 * 3_600


async def test_funding_times_passed_while_down_are_charged_once_on_restart(clock: SimClock,
                                                                           bus: Bus) -> None:
    broker, book = btc_broker(clock, bus)
    broker.execute("a", [Action(symbol="BTCUSDT", action="open_long", size_usdt=10_000.0,
                                leverage=5)], "c1", snapshot_of(book))
    qty = broker.accounts["a"].positions["BTCUSDT"].qty
    sub = bus.subscribe("test", [FundingPaid], capacity=100)
    rows = [(T0 - EIGHT_HOURS, 0.0005, 99_000.0),  # before the position
            (T0 + EIGHT_HOURS, 0.0001, 101_000.0),
            (T0 + 2 * EIGHT_HOURS, -0.0002, 102_000.0),
            (T0 + 3 * EIGHT_HOURS, 0.0003, 103_000.0)]  # after restart
    async with FakeBinance(funding={"BTCUSDT": rows}) as server:
        url = server.rest_url
        clock.set_time(T0 + 2 * EIGHT_HOURS + 600)  # restarted 10 min after the 2nd one
        history = binance_funding_history(FeedSettings(futures_rest_url=url), clock)
        assert await settle_missed_funding(broker, history, clock.time()) == 2
        paid = sub.drain()
        assert [(p.rate, p.mark) for p in paid] == [(0.0001, 101_000.0), (-0.0002, 102_000.0)]
        assert [p.amount for p in paid] == pytest.approx([qty * 101_000 * 0.0001,
                                                          -qty * 102_000 * 0.0002])
        acc = broker.accounts["a"]
        assert acc.funding == pytest.approx(sum(p.amount for p in paid))
        assert acc.state.funding_settled["BTCUSDT"] == T0 + 2 * EIGHT_HOURS
        # a second restart charges nothing again
        assert await settle_missed_funding(broker, history, clock.time()) == 0
    queries = [q for path, q in server.requests if path == "/fapi/v1/fundingRate"]
    assert int(queries[-1]["startTime"]) == int((T0 + 2 * EIGHT_HOURS) * 1000) + 1
    reconciles(broker, "a", {"BTCUSDT": 100_000.0})


async def test_unreachable_funding_history_is_logged_as_missed(clock: SimClock,
                                                              bus: Bus) -> None:
    broker, book = btc_broker(clock, bus)
    broker.execute("a", [Action(symbol="BTCUSDT", action="open_long", size_usdt=10_000.0,
                                leverage=5)], "c1", snapshot_of(book))
    clock.set_time(T0 + 2 * EIGHT_HOURS)
    async with FakeBinance() as server:
        url = server.rest_url  # the server is gone after this block: its port refuses
    history = binance_funding_history(FeedSettings(futures_rest_url=url,
                                                   max_backoff_seconds=1.0), clock)
    with capture_logs() as logs:
        task = asyncio.create_task(settle_missed_funding(broker, history, clock.time()))
        while not task.done():  # the REST client's retries wait on the engine clock
            await clock.advance(1)
            await asyncio.sleep(0.01)
        assert task.result() == 0
    (missed,) = [x for x in logs if x["event"] == "funding.missed"]
    assert missed["symbol"] == "BTCUSDT" and missed["log_level"] == "warning"
    assert broker.accounts["a"].funding == 0.0


async def test_the_broker_service_catches_up_on_funding_at_start(clock: SimClock,
                                                                bus: Bus) -> None:
    calls: list[tuple[str, float, float]] = []

    async def history(symbol: str, after: float, until: float) -> list:
        calls.append((symbol, after, until))
        return [(T0 + EIGHT_HOURS, 0.0001, 100_000.0)]

    broker, book = btc_broker(clock, bus, funding_history=history)
    broker.execute("a", [Action(symbol="BTCUSDT", action="open_long", size_usdt=10_000.0,
                                leverage=5)], "c1", snapshot_of(book))
    clock.set_time(T0 + EIGHT_HOURS + 60)
    task = asyncio.create_task(broker.run())
    await clock.settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == [("BTCUSDT", T0, T0 + EIGHT_HOURS + 60)]
    assert broker.accounts["a"].funding > 0
