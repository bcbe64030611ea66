"""The demo's synthetic history: seeded, 1m volatility as profiled, timeframes that agree."""

from __future__ import annotations

import math

import numpy as np

from engine.market.marketgen import PROFILES
from engine.market.synthhistory import FUNDING_EVERY, SyntheticHistory

START = 1_767_225_600  # 2026-01-01T00:00:00Z
DAYS = 6


def history(seed: int = 7) -> SyntheticHistory:
    return SyntheticHistory(("BTCUSDT", "DOGEUSDT"), START, START + DAYS * 86_400, seed)


def test_the_same_seed_gives_the_same_market_and_another_seed_another() -> None:
    a, b, c = history(), history(), history(8)
    assert a.candle("BTCUSDT", START + 3600, 900) == b.candle("BTCUSDT", START + 3600, 900)
    assert a.candle("BTCUSDT", START + 3600) != c.candle("BTCUSDT", START + 3600)
    assert a.funding("BTCUSDT", START, START + 86_400) == b.funding("BTCUSDT", START,
                                                                   START + 86_400)


def test_one_minute_volatility_matches_the_symbols_annual_volatility() -> None:
    h = history()
    for symbol in ("BTCUSDT", "DOGEUSDT"):
        close = h.paths[symbol].close
        sd = float(np.std(np.diff(np.log(close))))
        expected = PROFILES[symbol][3] / math.sqrt(365 * 1440)  # 7.6 bp a minute for BTCUSDT
        assert 0.7 * expected < sd < 1.5 * expected, (symbol, sd, expected)
        # heavy tails, as real 1m returns have: more 4-sigma minutes than a normal's 0.006 %
        z = np.diff(np.log(close)) / sd
        assert np.mean(np.abs(z) > 4) > 0.0003


def test_every_higher_bucket_is_the_aggregate_of_its_minutes() -> None:
    h = history()
    for seconds in (900, 3600, 14_400):
        for t in range(START, START + DAYS * 86_400 - seconds + 1, seconds):
            minutes = [h.candle("BTCUSDT", t + 60 * i) for i in range(seconds // 60)]
            assert all(m is not None for m in minutes)
            o, hi, lo, c, v = h.candle("BTCUSDT", t, seconds)  # type: ignore[misc]
            assert o == minutes[0][0] and c == minutes[-1][3]  # type: ignore[index]
            assert hi == max(m[1] for m in minutes)  # type: ignore[index]
            assert lo == min(m[2] for m in minutes)  # type: ignore[index]
            assert math.isclose(v, sum(m[4] for m in minutes))  # type: ignore[index]


def test_candles_are_consistent_and_continuous() -> None:
    p = history().paths["BTCUSDT"]
    assert np.all(p.high >= np.maximum(p.open, p.close))
    assert np.all(p.low <= np.minimum(p.open, p.close))
    assert np.all(p.open[1:] == p.close[:-1])  # no gaps between minutes
    assert np.all(p.volume > 0)


def test_funding_settles_every_eight_hours_at_a_plausible_rate() -> None:
    settled = history().funding("BTCUSDT", START, START + 3 * 86_400)
    times = [t for t, _, _ in settled]
    assert times == list(range(START, START + 3 * 86_400 + 1, FUNDING_EVERY))
    rates = [r for _, r, _ in settled]
    assert all(-7.5e-4 <= r <= 7.5e-4 for r in rates)
    assert 0 < np.mean(rates) < 3e-4 and len(set(rates)) == len(rates)


def test_outside_the_span_there_is_no_candle() -> None:
    h = history()
    assert h.candle("BTCUSDT", START - 60) is None
    assert h.candle("BTCUSDT", START + DAYS * 86_400) is None
    assert h.candle("ETHUSDT", START) is None  # not generated
