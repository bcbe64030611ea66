"""Binance REST: klines paging, request-weight budget, 429/418 with Retry-After, exchangeInfo."""

from __future__ import annotations

import asyncio
import re

import orjson
import pytest
from aioresponses import CallbackResult, aioresponses

from engine.clock import SimClock
from engine.market.binance import BinanceRest, RestError, klines_weight, parse_exchange_info
from engine.settings import FeedSettings
from tests.support.feed import (
    KLINES_URL,
    T0,
    TIME_URL,
    klines_callback,
    minutes,
    time_callback,
    truth_candle,
)

SETTINGS = FeedSettings(futures_rest_url="http://rest.test", rest_weight_per_minute=10)


def test_klines_weight_follows_binance_limits() -> None:
    assert [klines_weight("futures", n) for n in (1, 99, 100, 499, 500, 1000, 1500)] == [
        1, 1, 2, 2, 5, 5, 10]
    assert klines_weight("spot", 1000) == 2


async def test_closed_klines_pages_through_long_gaps_and_skips_the_open_candle() -> None:
    clock = SimClock(start=T0)
    rest = BinanceRest(FeedSettings(futures_rest_url="http://rest.test"), clock)
    requests: list[dict[str, str]] = []
    first = T0 // 60 * 60 - 2000 * 60
    with aioresponses() as m:
        m.get(TIME_URL, callback=time_callback(clock.time), repeat=True)
        m.get(KLINES_URL, callback=klines_callback(requests, clock.time), repeat=True)
        rows = await rest.closed_klines("BTCUSDT", first, T0 // 60 * 60)  # includes open minute
        await rest.close()
    assert rows == [truth_candle("BTCUSDT", t) for t in minutes(first, T0 // 60 * 60 - 60)]
    assert [int(q["limit"]) for q in requests] == [1500, 500]


async def test_requests_wait_for_the_next_minute_when_the_weight_budget_is_spent() -> None:
    clock = SimClock(start=T0)
    rest = BinanceRest(SETTINGS, clock)
    requests: list[dict[str, str]] = []
    with aioresponses() as m:
        m.get(KLINES_URL, callback=klines_callback(requests, clock.time), repeat=True)
        # limit 100 weighs 2: five calls fill the budget of 10; the sixth waits for 00:11:00.
        tasks = [asyncio.create_task(rest.klines("BTCUSDT", limit=100, end=T0 - 60))
                 for _ in range(6)]
        for _ in range(100):
            await asyncio.sleep(0)
            if len(requests) == 5:
                break
        await clock.settle()
        assert len(requests) == 5
        assert clock.next_wakeup() == T0 // 60 * 60 + 60
        await clock.advance_to(T0 // 60 * 60 + 60)
        await asyncio.gather(*tasks)
        await rest.close()
    assert len(requests) == 6


@pytest.mark.parametrize("status", [429, 418])
async def test_rate_limit_answers_wait_retry_after_on_the_clock_then_retry(status: int) -> None:
    clock = SimClock(start=T0)
    rest = BinanceRest(SETTINGS, clock)
    answers = [CallbackResult(status=status, headers={"Retry-After": "7"}, body="{}"),
               CallbackResult(status=200, body=orjson.dumps([]).decode())]
    calls: list[float] = []

    def callback(url: object, **kwargs: object) -> CallbackResult:
        calls.append(clock.time())
        return answers.pop(0)

    with aioresponses() as m:
        m.get(KLINES_URL, callback=callback, repeat=True)
        task = asyncio.create_task(rest.klines("BTCUSDT", limit=10))
        for _ in range(100):
            await asyncio.sleep(0)
            if clock.next_wakeup() is not None:
                break
        assert clock.next_wakeup() == T0 + 7
        await clock.advance(7)
        assert await task == []
        await rest.close()
    assert calls == [T0, T0 + 7]


async def test_client_errors_are_not_retried() -> None:
    clock = SimClock(start=T0)
    rest = BinanceRest(SETTINGS, clock)
    with aioresponses() as m:
        m.get(KLINES_URL, status=400, body='{"code":-1121,"msg":"Invalid symbol."}')
        with pytest.raises(RestError, match="Invalid symbol"):
            await rest.klines("NOPE", limit=10)
        await rest.close()


async def test_exchange_info_gives_step_tick_and_min_notional() -> None:
    body = {"symbols": [
        {"symbol": "BTCUSDT", "maintMarginPercent": "2.5000", "filters": [
            {"filterType": "PRICE_FILTER", "tickSize": "0.10", "minPrice": "556.80"},
            {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001"},
            {"filterType": "MIN_NOTIONAL", "notional": "100"}]},
        {"symbol": "ETHUSDT", "filters": [
            {"filterType": "PRICE_FILTER", "tickSize": "0.01"},
            {"filterType": "LOT_SIZE", "stepSize": "0.001"},
            {"filterType": "MIN_NOTIONAL", "notional": "20"}]},
        {"symbol": "LTCUSDT", "filters": []},
    ]}
    clock = SimClock(start=T0)
    rest = BinanceRest(SETTINGS, clock)
    with aioresponses() as m:
        m.get(re.compile(r"^http://rest\.test/fapi/v1/exchangeInfo.*$"), payload=body)
        info = await rest.exchange_info(("BTCUSDT", "ETHUSDT"))
        await rest.close()
    # maintMarginPercent (a legacy 2.5 for every symbol) is never read: brackets come from settings
    assert info == {
        "BTCUSDT": {"step_size": 0.001, "tick_size": 0.1, "min_notional": 100.0},
        "ETHUSDT": {"step_size": 0.001, "tick_size": 0.01, "min_notional": 20.0},
    }
    spot = {"symbols": [{"symbol": "BTCUSDT", "filters": [
        {"filterType": "NOTIONAL", "minNotional": "5.00000000"}]}]}
    assert parse_exchange_info(spot) == {"BTCUSDT": {"min_notional": 5.0}}
