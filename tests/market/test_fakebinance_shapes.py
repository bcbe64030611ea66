"""The fake Binance answers in real Binance's shapes, and injects the faults it promises.

The expected shapes are written here by hand from two sources: the USD-M responses recorded by
NautilusTrader (tests/integration_tests/adapters/binance/resources/ of nautechsystems/
nautilus_trader: klines, mark-price klines, funding rate, exchange info, the futures bookTicker
stream message) and Binance's documentation (the kline and markPrice stream payloads, which
NautilusTrader keeps no recording of, and /fapi/v1/leverageBracket). A shape names every field
in Binance's order with its JSON type; "num" is a number encoded as a string ("0.01634790").
"""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from engine.clock import SimClock
from engine.market.fakebinance import GARBAGE, FakeBinance, synthetic_market
from engine.market.fakebinance.faults import GARBAGE_FRAME
from tests.support.feed import eventually

NOW = 1_790_812_800.0  # 2026-10-01T00:00:00Z on the fake's clock
KLINE_ROW = ["int", "num", "num", "num", "num", "num", "int", "num", "int", "num", "num", "num"]
FUNDING_ROW = {"symbol": "str", "fundingRate": "num", "fundingTime": "int", "markPrice": "num"}
EXCHANGE_INFO = {"timezone": "str", "serverTime": "int", "futuresType": "str",
                 "rateLimits": "list", "exchangeFilters": "list", "assets": "list",
                 "symbols": "list"}
SYMBOL_INFO = {
    "symbol": "str", "pair": "str", "contractType": "str", "deliveryDate": "int",
    "onboardDate": "int", "status": "str", "maintMarginPercent": "num",
    "requiredMarginPercent": "num", "baseAsset": "str", "quoteAsset": "str",
    "marginAsset": "str", "pricePrecision": "int", "quantityPrecision": "int",
    "baseAssetPrecision": "int", "quotePrecision": "int", "underlyingType": "str",
    "underlyingSubType": "list", "settlePlan": "int", "triggerProtect": "num",
    "liquidationFee": "num", "marketTakeBound": "num", "filters": "list", "orderTypes": "list",
    "timeInForce": "list"}
FILTERS = {"PRICE_FILTER": {"minPrice": "num", "maxPrice": "num", "tickSize": "num"},
           "LOT_SIZE": {"stepSize": "num", "maxQty": "num", "minQty": "num"},
           "MIN_NOTIONAL": {"notional": "num"}}
BRACKET_ENTRY = {"symbol": "str", "brackets": "list"}
BRACKET = {"bracket": "int", "initialLeverage": "int", "notionalCap": "number",
           "notionalFloor": "number", "maintMarginRatio": "number", "cum": "number"}
BOOK_TICKER = {"e": "str", "u": "int", "E": "int", "T": "int", "s": "str", "b": "num",
               "B": "num", "a": "num", "A": "num"}
KLINE_EVENT = {"e": "str", "E": "int", "s": "str", "k": "dict"}
KLINE = {"t": "int", "T": "int", "s": "str", "i": "str", "f": "int", "L": "int", "o": "num",
         "c": "num", "h": "num", "l": "num", "v": "num", "n": "int", "x": "bool", "q": "num",
         "V": "num", "Q": "num", "B": "num"}
MARK_PRICE = {"e": "str", "E": "int", "s": "str", "p": "num", "i": "num", "P": "num",
              "r": "num", "T": "int"}


def kind(value: Any) -> str:
    """Return the shape word of a JSON value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        try:
            Decimal(value)
        except ArithmeticError:
            return "str"
        return "num" if value.strip() == value and value else "str"
    return {list: "list", dict: "dict"}.get(type(value), type(value).__name__)


def shape_of(obj: dict[str, Any]) -> dict[str, str]:
    return {k: kind(v) for k, v in obj.items()}


def numbers(shape: dict[str, str]) -> dict[str, str]:
    """Accept an int or a float where Binance sends a JSON number of either kind."""
    return {k: ("number" if v in ("int", "float") and k not in ("bracket", "initialLeverage")
                else v) for k, v in shape.items()}


@pytest.fixture
async def fake() -> Any:
    clock = SimClock(NOW)
    async with FakeBinance(clock=clock) as server:
        yield server


async def get(url: str, **params: Any) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as http, http.get(
            url, params={k: str(v) for k, v in params.items()}) as resp:
        return resp.status, dict(resp.headers), orjson.loads(await resp.read())


async def test_klines_and_mark_price_klines_are_arrays_of_twelve_in_binances_types(fake) -> None:
    start = int((NOW - 3600) * 1000)
    for path in ("klines", "markPriceKlines"):
        status, headers, rows = await get(f"{fake.rest_url}/fapi/v1/{path}", symbol="BTCUSDT",
                                          interval="1m", startTime=start, limit=5)
        assert status == 200 and int(headers["X-MBX-USED-WEIGHT-1M"]) > 0
        assert [[kind(v) for v in r] for r in rows] == [KLINE_ROW] * 5
        assert [r[0] for r in rows] == [start + 60_000 * i for i in range(5)]  # ascending
        assert all(r[6] == r[0] + 59_999 for r in rows)
        lo, hi = Decimal(rows[0][3]), Decimal(rows[0][2])
        assert lo <= Decimal(rows[0][1]) <= hi and lo <= Decimal(rows[0][4]) <= hi
    assert rows[0][5] == "0"  # a mark-price kline has no volume


async def test_klines_without_start_or_end_are_the_newest_up_to_now(fake) -> None:
    status, _, rows = await get(f"{fake.rest_url}/fapi/v1/klines", symbol="ETHUSDT",
                                interval="15m", limit=3)
    assert status == 200
    newest = int(NOW // 900 * 900 * 1000)
    assert [r[0] for r in rows] == [newest - 2 * 900_000, newest - 900_000, newest]


async def test_funding_rate_rows_are_in_binances_shape_and_order(fake) -> None:
    status, _, rows = await get(f"{fake.rest_url}/fapi/v1/fundingRate", symbol="BTCUSDT",
                                startTime=int((NOW - 86_400) * 1000), limit=10)
    assert status == 200 and len(rows) == 4  # 8-hourly, the window's end included
    assert [shape_of(r) for r in rows] == [FUNDING_ROW] * 4
    assert [list(r) for r in rows] == [list(FUNDING_ROW)] * 4
    times = [r["fundingTime"] for r in rows]
    assert times == sorted(times) and all(t % 28_800_000 == 0 for t in times)
    _, _, newest = await get(f"{fake.rest_url}/fapi/v1/fundingRate", symbol="BTCUSDT", limit=2)
    assert [r["fundingTime"] for r in newest] == [int(NOW * 1000) - 28_800_000, int(NOW * 1000)]


async def test_exchange_info_lists_each_symbol_with_its_filters(fake) -> None:
    status, _, body = await get(f"{fake.rest_url}/fapi/v1/exchangeInfo")
    assert status == 200 and shape_of(body) == EXCHANGE_INFO
    assert list(body) == list(EXCHANGE_INFO)
    btc = next(s for s in body["symbols"] if s["symbol"] == "BTCUSDT")
    assert shape_of(btc) == SYMBOL_INFO and list(btc) == list(SYMBOL_INFO)
    filters = {f["filterType"]: f for f in btc["filters"]}
    for name, expected in FILTERS.items():
        got = {k: v for k, v in shape_of(filters[name]).items() if k != "filterType"}
        assert got == expected, name
    assert (filters["PRICE_FILTER"]["tickSize"], filters["LOT_SIZE"]["stepSize"],
            filters["MIN_NOTIONAL"]["notional"]) == ("0.10", "0.001", "100")


async def test_leverage_brackets_are_numbers_with_cumulative_amounts(fake) -> None:
    status, _, body = await get(f"{fake.rest_url}/fapi/v1/leverageBracket", symbol="BTCUSDT")
    assert status == 200 and shape_of(body) == BRACKET_ENTRY
    tiers = body["brackets"]
    assert [numbers(shape_of(b)) for b in tiers] == [BRACKET] * len(tiers)
    assert [b["bracket"] for b in tiers] == list(range(1, len(tiers) + 1))
    for lower, upper in itertools.pairwise(tiers):
        assert upper["notionalFloor"] == lower["notionalCap"]
        # Binance's cum: the maintenance margin stays continuous at each tier's floor
        floor = upper["notionalFloor"]
        assert floor * lower["maintMarginRatio"] - lower["cum"] == pytest.approx(
            floor * upper["maintMarginRatio"] - upper["cum"])
    _, _, every = await get(f"{fake.rest_url}/fapi/v1/leverageBracket")
    assert [e["symbol"] for e in every] == fake.symbols


async def test_server_time_is_the_fakes_clock_in_milliseconds(fake) -> None:
    assert (await get(f"{fake.rest_url}/fapi/v1/time"))[2] == {"serverTime": int(NOW * 1000)}


async def test_stream_frames_are_binances_combined_stream_payloads() -> None:
    def past(symbols: tuple[str, ...], now: float) -> Any:
        return synthetic_market(hours=1 / 60)(symbols, now - 60)  # a minute, all due at once

    async with FakeBinance(market=past) as fake:
        streams = "btcusdt@bookTicker/btcusdt@kline_1m/btcusdt@markPrice@1s"
        seen: dict[str, dict[str, Any]] = {}
        # max_queue=None: the client keeps reading, so its close is answered at once
        async with connect(f"{fake.ws_url}/stream?streams={streams}", max_queue=None) as ws:
            while len(seen) < 3:
                frame = orjson.loads(await ws.recv())
                assert list(frame) == ["stream", "data"]
                seen.setdefault(frame["stream"], frame["data"])
    assert fake.paths == [f"/stream?streams={streams}"]
    book, kline, mark = (seen["btcusdt@bookTicker"], seen["btcusdt@kline_1m"],
                         seen["btcusdt@markPrice@1s"])
    assert shape_of(book) == BOOK_TICKER and list(book) == list(BOOK_TICKER)
    assert shape_of(kline) == KLINE_EVENT and list(kline) == list(KLINE_EVENT)
    assert shape_of(kline["k"]) == KLINE and list(kline["k"]) == list(KLINE)
    assert shape_of(mark) == MARK_PRICE and list(mark) == list(MARK_PRICE)
    assert (book["e"], kline["e"], kline["k"]["i"], mark["e"]) == (
        "bookTicker", "kline", "1m", "markPriceUpdate")


# ---------------------------------------------------------------- faults


async def test_rate_limits_bans_and_server_errors_are_answered_in_turn(fake) -> None:
    fake.faults.rate_limited, fake.faults.banned, fake.faults.server_errors = 1, 1, 1
    fake.faults.retry_after = "7"
    url = f"{fake.rest_url}/fapi/v1/time"
    answers = [await get(url) for _ in range(4)]
    assert [a[0] for a in answers] == [429, 418, 503, 200]
    assert [a[1].get("Retry-After") for a in answers[:3]] == ["7", "7", None]
    assert answers[0][2]["code"] == -1003 and answers[2][2]["code"] == -1001
    assert len(fake.requests) == 4


async def test_a_delay_waits_on_the_fakes_clock(fake) -> None:
    fake.faults.delay_seconds = 30.0
    task = asyncio.create_task(get(f"{fake.rest_url}/fapi/v1/time"))
    clock: SimClock = fake.clock  # type: ignore[assignment]
    await eventually(lambda: bool(fake.requests), "the request reached the server")
    await clock.advance(29)
    assert not task.done()
    await clock.advance(1)
    assert (await task)[0] == 200


async def test_missing_klines_leave_a_hole_in_the_answer(fake) -> None:
    start = NOW - 600
    fake.faults.missing_klines = [(start + 120, start + 240)]
    _, _, rows = await get(f"{fake.rest_url}/fapi/v1/klines", symbol="BTCUSDT", interval="1m",
                           startTime=int(start * 1000), limit=6)
    assert [(r[0] / 1000 - start) / 60 for r in rows] == [0, 1, 4, 5]


async def test_refused_handshakes_garbage_and_a_dropped_connection() -> None:
    async with FakeBinance() as fake:
        fake.faults.refuse_handshakes = 1
        with pytest.raises(Exception, match="503"):
            async with connect(f"{fake.ws_url}/stream?streams=btcusdt@bookTicker"):
                pass
        assert fake.refused == 1 and fake.connections == 0
        fake.faults.garbage_every, fake.faults.drop_after_frames = 2, 3
        fake.send('{"stream":"a","data":1}', '{"stream":"a","data":2}', GARBAGE,
                  '{"stream":"a","data":3}', '{"stream":"a","data":4}')
        got = []
        with pytest.raises(ConnectionClosedError):  # aborted: no close frame
            async with connect(f"{fake.ws_url}/stream?streams=btcusdt@bookTicker") as ws:
                while True:
                    got.append(await ws.recv())
        assert got == ['{"stream":"a","data":1}', GARBAGE_FRAME, '{"stream":"a","data":2}',
                       GARBAGE_FRAME, '{"stream":"a","data":3}']
        async with connect(f"{fake.ws_url}/stream?streams=btcusdt@bookTicker") as ws:
            assert await ws.recv() == '{"stream":"a","data":4}'  # its 1st: no garbage yet
        assert fake.connections == 2


async def test_a_gap_keeps_its_market_frames_from_the_stream() -> None:
    def past(symbols: tuple[str, ...], now: float) -> Any:
        return synthetic_market(hours=1 / 60)(symbols, now - 60)

    async with FakeBinance(market=past, clock=SimClock(NOW)) as fake:
        fake.faults.gaps = [(NOW - 61, NOW - 31)]
        times = []
        async with connect(f"{fake.ws_url}/stream?streams=btcusdt@bookTicker",
                           max_queue=None) as ws:
            while len(times) < 5:
                times.append(orjson.loads(await ws.recv())["data"]["E"] / 1000)
    assert min(times) >= NOW - 31
