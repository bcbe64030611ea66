"""Maintenance margins from Binance's brackets, and funding missed while the engine was down."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from engine.bus import Bus
from engine.clock import SimClock
from engine.decision import Action
from engine.events import FundingPaid
from engine.market.binance import parse_exchange_info
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


def test_maintenance_amounts_follow_binances_cumulative_formula() -> None:
    assert [b.maint_amount for b in BTC.brackets] == [0.0, 50.0, 1_300.0]
    assert BTC.maintenance(5_000) == (0.004, 0.0)
    assert BTC.maintenance(50_000) == (0.004, 0.0)  # a cap is inclusive
    assert BTC.maintenance(100_000) == (0.005, 50.0)
    assert BTC.maintenance(5_000_000) == (0.01, 1_300.0)  # beyond the table: its last tier
    assert SymbolFilter(maint_margin_rate=0.005).maintenance(1e6) == (0.005, 0.0)


def test_brackets_must_ascend() -> None:
    with pytest.raises(ValueError, match="ascending"):
        SymbolFilter(brackets=(BTC_TIERS[1], BTC_TIERS[0]))


def test_default_settings_carry_binance_btc_brackets() -> None:
    f = load_settings().broker.filter_for("BTCUSDT")
    assert f.maintenance(5_000) == (0.004, 0.0)
    assert f.maintenance(600_000) == (0.01, 1_300.0)
    assert f.maintenance(15_000_000) == (0.05, 266_300.0)


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


# ---------------------------------------------------------------- funding missed while down

EIGHT_HOURS = 8 * 3_600


class FundingServer:
    """/fapi/v1/fundingRate on 127.0.0.1 in Binance's shape (written by hand from its docs)."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows, self.queries = rows, []

    async def handler(self, request: web.Request) -> web.Response:
        q = request.query
        self.queries.append(dict(q))
        start, end = int(q["startTime"]), int(q["endTime"])
        return web.json_response([r for r in self.rows if r["symbol"] == q["symbol"]
                                  and start <= r["fundingTime"] <= end])

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_get("/fapi/v1/fundingRate", self.handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def funding_row(t: float, rate: str, mark: str) -> dict:
    return {"symbol": "BTCUSDT", "fundingTime": int(t * 1000), "fundingRate": rate,
            "markPrice": mark}


async def test_funding_times_passed_while_down_are_charged_once_on_restart(clock: SimClock,
                                                                           bus: Bus) -> None:
    broker, book = btc_broker(clock, bus)
    broker.execute("a", [Action(symbol="BTCUSDT", action="open_long", size_usdt=10_000.0,
                                leverage=5)], "c1", snapshot_of(book))
    qty = broker.accounts["a"].positions["BTCUSDT"].qty
    sub = bus.subscribe("test", [FundingPaid], capacity=100)
    rows = [funding_row(T0 - EIGHT_HOURS, "0.00050000", "99000.0"),  # before the position
            funding_row(T0 + EIGHT_HOURS, "0.00010000", "101000.0"),
            funding_row(T0 + 2 * EIGHT_HOURS, "-0.00020000", "102000.0"),
            funding_row(T0 + 3 * EIGHT_HOURS, "0.00030000", "103000.0")]  # after restart
    server = FundingServer(rows)
    async with server as url:
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
    assert int(server.queries[-1]["startTime"]) == int((T0 + 2 * EIGHT_HOURS) * 1000) + 1
    reconciles(broker, "a", {"BTCUSDT": 100_000.0})


async def test_unreachable_funding_history_is_logged_as_missed(clock: SimClock,
                                                              bus: Bus) -> None:
    broker, book = btc_broker(clock, bus)
    broker.execute("a", [Action(symbol="BTCUSDT", action="open_long", size_usdt=10_000.0,
                                leverage=5)], "c1", snapshot_of(book))
    clock.set_time(T0 + 2 * EIGHT_HOURS)
    async with FundingServer([]) as url:
        pass  # the server is gone: its port refuses connections
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
