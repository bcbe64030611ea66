"""A REST candle is closed when Binance's clock says so (closeTime < server time), never the
local clock alone."""

from __future__ import annotations

from aioresponses import aioresponses

from engine.clock import SimClock
from engine.events import Kline
from engine.market.binance import BinanceRest
from engine.market.candles import CandleStore
from engine.settings import FeedSettings
from tests.support.feed import KLINES_URL, TIME_URL, klines_callback, time_callback

MINUTE_T = 1_767_225_600.0 + 3_600  # 01:00:00 UTC, on a minute
SETTINGS = FeedSettings(futures_rest_url="http://rest.test")


async def fetch(local_offset: float) -> list[float]:
    """Fetch the last minutes when the local clock runs `local_offset` s ahead of Binance's."""
    clock = SimClock(start=MINUTE_T + 60.2)  # local: 01:01:00.2
    rest = BinanceRest(SETTINGS, clock)
    with aioresponses() as m:
        m.get(TIME_URL, callback=time_callback(lambda: clock.time() - local_offset), repeat=True)
        m.get(KLINES_URL, callback=klines_callback([], clock.time), repeat=True)
        rows = await rest.closed_klines("BTCUSDT", MINUTE_T - 240, MINUTE_T)
        await rest.close()
    return [r.open_time for r in rows]


async def test_a_local_clock_half_a_second_fast_never_stores_an_open_candle_as_closed() -> None:
    # Binance reads 01:00:59.7: the 01:00 candle (closeTime 01:00:59.999) is still open there.
    got = await fetch(local_offset=0.5)
    assert got[-1] == MINUTE_T - 60 and MINUTE_T not in got


async def test_a_candle_binance_has_closed_is_kept() -> None:
    got = await fetch(local_offset=0.0)  # Binance reads 01:01:00.2 as well
    assert got[-1] == MINUTE_T and len(got) == 5


async def test_klines_without_closed_only_ask_no_server_time() -> None:
    clock = SimClock(start=MINUTE_T + 60.2)
    rest = BinanceRest(SETTINGS, clock)
    requests: list[dict[str, str]] = []
    with aioresponses() as m:  # no /time answer registered: asking it would fail the test
        m.get(KLINES_URL, callback=klines_callback(requests, clock.time), repeat=True)
        rows = await rest.klines("BTCUSDT", limit=3, end=MINUTE_T)
        await rest.close()
    assert len(rows) == 3 and len(requests) == 1


def _kline(open_time: float, closed: bool, recv: float) -> Kline:
    return Kline("BTCUSDT", "1m", open_time, open_time + 59.999, 100.0, 101.0, 99.0, 100.5, 3.0,
                 closed, recv, recv)


def test_a_streamed_candle_is_closed_only_when_the_stream_says_x_true() -> None:
    store = CandleStore(FeedSettings())
    # received long after its close time by the local clock, but x = false: still forming
    store.apply_kline(_kline(MINUTE_T, closed=False, recv=MINUTE_T + 3_600))
    assert store.closed("BTCUSDT") == []
    store.apply_kline(_kline(MINUTE_T, closed=True, recv=MINUTE_T + 3_600))
    assert [c.open_time for c in store.closed("BTCUSDT")] == [MINUTE_T]
