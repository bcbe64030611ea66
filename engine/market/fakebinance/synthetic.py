"""The fake Binance's answers: a seeded price path in the shapes of Binance's USD-M REST API.

Every answer is written by hand from Binance's documented shapes (and checked against them in
tests/market/test_fakebinance_shapes.py), not recorded: klines and mark-price klines as arrays
of 12 (open time and close time as integers, prices and volumes as strings), funding-rate rows,
exchangeInfo with its filters, leverage brackets. The price path is deterministic: the same
(symbol, time) always gives the same candle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

BASES = {"BTCUSDT": 97_000.0, "ETHUSDT": 3_400.0, "SOLUSDT": 180.0, "BNBUSDT": 650.0,
         "XRPUSDT": 2.2, "DOGEUSDT": 0.32}
FUNDING_EVERY = 8 * 3600
INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14_400, "1d": 86_400}
# (tickSize, stepSize, min notional) as Binance lists them for these USD-M perpetuals
FILTERS = {"BTCUSDT": ("0.10", "0.001", "100"), "ETHUSDT": ("0.01", "0.001", "20"),
           "SOLUSDT": ("0.0100", "1", "5"), "BNBUSDT": ("0.010", "0.01", "5"),
           "XRPUSDT": ("0.0001", "0.1", "5"), "DOGEUSDT": ("0.000010", "1", "5")}
# (notional cap, maintenance margin ratio, max initial leverage) of the first tiers
BRACKETS = ((50_000, 0.004, 125), (600_000, 0.005, 100), (3_000_000, 0.0065, 75),
            (12_000_000, 0.01, 50), (70_000_000, 0.02, 25))

Candle = tuple[float, float, float, float, float]  # open, high, low, close, volume
CandleSource = Callable[[str, float, int], Candle]  # (symbol, open time, seconds) → candle


def price(symbol: str, t: float) -> float:
    """Return the synthetic price of `symbol` at `t` (a few slow waves around its base)."""
    base = BASES.get(symbol, 50.0)
    seed = sum(map(ord, symbol))
    wave = math.sin(t / 5400 + seed) * 0.02 + math.sin(t / 797 + seed * 2) * 0.004
    return base * (1 + wave + 0.01 * math.sin(t / 86_400))


def candle(symbol: str, open_time: float, seconds: int = 60) -> Candle:
    """Return the one candle of `symbol` opening at `open_time`."""
    o, c = price(symbol, open_time), price(symbol, open_time + seconds)
    mid = price(symbol, open_time + seconds / 2)
    hi, lo = max(o, c, mid) * 1.0004, min(o, c, mid) * 0.9996
    return o, hi, lo, c, 100.0 + (open_time // 60) % 17


def kline_row(open_time: int, seconds: int, c: Candle, *, mark: bool) -> list[Any]:
    """Return one kline as Binance sends it: 12 fields, times as integers, numbers as strings.

    A mark-price kline (the mark a hair above the last price here) has no volume: its volume
    fields are "0"."""
    o, h, lo, cl, v = c
    ms = open_time * 1000
    if mark:
        o, h, lo, cl = o * 1.0001, h * 1.0001, lo * 1.0001, cl * 1.0001
        return [ms, f"{o:.6f}", f"{h:.6f}", f"{lo:.6f}", f"{cl:.6f}", "0", ms + seconds * 1000 - 1,
                "0", 60, "0", "0", "0"]
    quote = v * (o + cl) / 2
    return [ms, f"{o:.6f}", f"{h:.6f}", f"{lo:.6f}", f"{cl:.6f}", f"{v:.3f}",
            ms + seconds * 1000 - 1, f"{quote:.5f}", 10, f"{v / 2:.3f}", f"{quote / 2:.5f}", "0"]


def funding_rate(symbol: str, t: int) -> float:
    """Return the synthetic funding rate of `symbol` at funding time `t`."""
    return 0.0001 * (1 + math.sin(t / 100_000 + len(symbol)))


def funding_row(symbol: str, t: int, rate: float, mark: float) -> dict[str, Any]:
    """Return one `/fapi/v1/fundingRate` row: time as an integer, rate and mark as strings."""
    return {"symbol": symbol, "fundingRate": f"{rate:.8f}", "fundingTime": t * 1000,
            "markPrice": f"{mark:.8f}"}


def symbol_info(symbol: str) -> dict[str, Any]:
    """Return `symbol`'s entry of exchangeInfo (a USD-M perpetual), with its filters."""
    tick, step, notional = FILTERS.get(symbol, ("0.01", "0.001", "5"))
    base = symbol.removesuffix("USDT")
    return {
        "symbol": symbol, "pair": symbol, "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
        "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
        "baseAsset": base, "quoteAsset": "USDT", "marginAsset": "USDT",
        "pricePrecision": _decimals(tick), "quantityPrecision": _decimals(step),
        "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
        "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
        "liquidationFee": "0.012500", "marketTakeBound": "0.05",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "4529764",
             "tickSize": tick},
            {"filterType": "LOT_SIZE", "stepSize": step, "maxQty": "1000", "minQty": step},
            {"filterType": "MARKET_LOT_SIZE", "stepSize": step, "maxQty": "120", "minQty": step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": notional},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500",
             "multiplierDown": "0.9500", "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                       "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


def exchange_info(symbols: list[str], server_time_ms: int) -> dict[str, Any]:
    """Return the `/fapi/v1/exchangeInfo` body listing `symbols`."""
    return {
        "timezone": "UTC", "serverTime": server_time_ms, "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": 2400},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [symbol_info(s) for s in symbols],
    }


def leverage_brackets(symbol: str) -> dict[str, Any]:
    """Return `symbol`'s `/fapi/v1/leverageBracket` entry (numbers as JSON numbers)."""
    tiers, floor, cum, prev_rate = [], 0, 0.0, 0.0
    for i, (cap, rate, lev) in enumerate(BRACKETS, start=1):
        cum += floor * (rate - prev_rate)
        tiers.append({"bracket": i, "initialLeverage": lev, "notionalCap": cap,
                      "notionalFloor": floor, "maintMarginRatio": rate, "cum": round(cum, 2)})
        floor, prev_rate = cap, rate
    return {"symbol": symbol, "brackets": tiers}


def _decimals(text: str) -> int:
    return len(text.partition(".")[2].rstrip("0")) if "." in text else 0
