"""Indicators against independent pure-Python loops of the textbook definitions and hand values."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from engine.market import indicators as ind

# ---------------------------------------------------------------- reference implementations


def ref_sma(x: list[float], n: int) -> list[float | None]:
    return [None if i + 1 < n else sum(x[i + 1 - n : i + 1]) / n for i in range(len(x))]


def ref_ema(x: list[float | None], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(x)
    start = next((i for i, v in enumerate(x) if v is not None), None)
    if start is None or len(x) - start < n:
        return out
    k = 2 / (n + 1)
    prev = sum(x[start : start + n]) / n  # type: ignore[arg-type]
    out[start + n - 1] = prev
    for i in range(start + n, len(x)):
        prev = x[i] * k + prev * (1 - k)  # type: ignore[operator]
        out[i] = prev
    return out


def ref_rsi(c: list[float], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(c)
    if len(c) <= n:
        return out
    ups = [max(c[i] - c[i - 1], 0.0) for i in range(1, len(c))]
    downs = [max(c[i - 1] - c[i], 0.0) for i in range(1, len(c))]
    up, down = sum(ups[:n]) / n, sum(downs[:n]) / n
    for i in range(n, len(c)):
        if i > n:
            up = (up * (n - 1) + ups[i - 1]) / n
            down = (down * (n - 1) + downs[i - 1]) / n
        out[i] = 100.0 if down == 0 else 100 - 100 / (1 + up / down)
    return out


def ref_atr(h: list[float], lo: list[float], c: list[float], n: int) -> list[float | None]:
    tr = [h[0] - lo[0]] + [max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1]))
                           for i in range(1, len(c))]
    out: list[float | None] = [None] * len(c)
    if len(c) < n:
        return out
    a = sum(tr[:n]) / n
    out[n - 1] = a
    for i in range(n, len(c)):
        a = (a * (n - 1) + tr[i]) / n
        out[i] = a
    return out


def ref_bollinger(c: list[float], n: int, k: float) -> list[tuple[float, float, float] | None]:
    out: list[tuple[float, float, float] | None] = []
    for i in range(len(c)):
        if i + 1 < n:
            out.append(None)
            continue
        w = c[i + 1 - n : i + 1]
        m = sum(w) / n
        sd = math.sqrt(sum((v - m) ** 2 for v in w) / n)
        out.append((m + k * sd, m, m - k * sd))
    return out


def assert_close(actual: np.ndarray, expected: list[float | None]) -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual.tolist(), expected, strict=True)):
        if e is None:
            assert math.isnan(a), f"index {i}: expected NaN, got {a}"
        else:
            assert a == pytest.approx(e, rel=1e-9, abs=1e-9), f"index {i}"


@pytest.fixture
def series() -> tuple[list[float], list[float], list[float]]:
    rng = random.Random(42)
    close, high, low = [], [], []
    price = 100.0
    for _ in range(300):
        o = price
        price *= math.exp(rng.gauss(0, 0.01))
        close.append(price)
        high.append(max(o, price) * (1 + abs(rng.gauss(0, 0.003))))
        low.append(min(o, price) * (1 - abs(rng.gauss(0, 0.003))))
    return high, low, close


# ---------------------------------------------------------------- against the references


def test_sma_matches_the_reference(series: tuple) -> None:
    close = series[2]
    for n in (1, 5, 20):
        assert_close(ind.sma(close, n), ref_sma(close, n))


def test_ema_matches_the_reference(series: tuple) -> None:
    close = series[2]
    for n in (9, 20, 50):
        assert_close(ind.ema(close, n), ref_ema(close, n))


def test_rsi_matches_wilders_reference(series: tuple) -> None:
    close = series[2]
    assert_close(ind.rsi(close, 14), ref_rsi(close, 14))


def test_macd_line_signal_and_histogram_match_the_reference(series: tuple) -> None:
    close = series[2]
    e12, e26 = ref_ema(close, 12), ref_ema(close, 26)
    line = [None if a is None or b is None else a - b for a, b in zip(e12, e26, strict=True)]
    signal = ref_ema(line, 9)
    hist = [None if a is None or b is None else a - b for a, b in zip(line, signal, strict=True)]
    got_line, got_signal, got_hist = ind.macd(close)
    assert_close(got_line, line)
    assert_close(got_signal, signal)
    assert_close(got_hist, hist)
    assert not math.isnan(got_signal[33]) and math.isnan(got_signal[32])  # 26 + 9 - 2


def test_atr_matches_wilders_reference(series: tuple) -> None:
    high, low, close = series
    assert_close(ind.atr(high, low, close, 14), ref_atr(high, low, close, 14))


def test_bollinger_matches_the_reference(series: tuple) -> None:
    close = series[2]
    upper, mid, lower = ind.bollinger(close, 20, 2.0)
    ref = ref_bollinger(close, 20, 2.0)
    assert_close(upper, [r[0] if r else None for r in ref])
    assert_close(mid, [r[1] if r else None for r in ref])
    assert_close(lower, [r[2] if r else None for r in ref])


# ---------------------------------------------------------------- hand-checked numbers


def test_sma_and_ema_by_hand() -> None:
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert ind.sma(x, 3).tolist()[2:] == [2.0, 3.0, 4.0]
    # alpha = 0.5: seed mean(1,2,3) = 2; then 2 + 0.5*(4-2) = 3; 3 + 0.5*(5-3) = 4
    assert ind.ema(x, 3).tolist()[2:] == [2.0, 3.0, 4.0]
    assert ind.ema([10.0, 10.0, 10.0, 13.0], 3).tolist()[3] == 11.5


def test_rsi_by_hand() -> None:
    # changes: +1, -1, +2 ; n = 2: seed gain (1+0)/2 = .5, loss (0+1)/2 = .5 -> RSI 50
    # next: gain (.5*1 + 2)/2 = 1.25, loss (.5*1 + 0)/2 = .25 -> RSI 100 - 100/6
    r = ind.rsi([10.0, 11.0, 10.0, 12.0], 2)
    assert r[2] == 50.0
    assert r[3] == pytest.approx(100 - 100 / 6)
    assert ind.rsi([1.0, 2.0, 3.0, 4.0], 2)[3] == 100.0  # no losses
    assert ind.rsi([5.0, 5.0, 5.0], 2)[2] == 50.0  # no movement


def test_atr_and_true_range_by_hand() -> None:
    high, low, close = [10.0, 12.0, 11.0], [9.0, 10.0, 8.0], [9.5, 11.5, 9.0]
    # TR: 1 ; max(2, 2.5, 0.5) = 2.5 ; max(3, 0.5, 3.5) = 3.5
    assert ind.true_range(high, low, close).tolist() == [1.0, 2.5, 3.5]
    a = ind.atr(high, low, close, 2)
    assert a[1] == 1.75  # mean(1, 2.5)
    assert a[2] == 2.625  # (1.75 + 3.5) / 2


def test_bollinger_by_hand() -> None:
    upper, mid, lower = ind.bollinger([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], 8, 2.0)
    # mean 5, population standard deviation 2
    assert (upper[-1], mid[-1], lower[-1]) == (9.0, 5.0, 1.0)


def test_too_short_series_give_nan_and_summary_gives_none() -> None:
    assert math.isnan(ind.ema([1.0, 2.0], 3)[-1])
    assert np.isnan(ind.rsi([1.0] * 14, 14)).all()
    s = ind.summary(np.array([2.0]), np.array([1.0]), np.array([1.5]))
    assert s["close"] == 1.5
    assert s["ema20"] is None and s["rsi14"] is None and s["atr14"] is None
    assert ind.summary(np.array([]), np.array([]), np.array([]))["close"] is None


# ---------------------------------------------------------------- running indicators


def _random_series(rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
    close = np.cumprod(1 + rng.normal(0, 0.01, size)) * float(rng.choice([0.001, 1, 60_000]))
    high = close * (1 + np.abs(rng.normal(0, 0.003, size)))
    low = close * (1 - np.abs(rng.normal(0, 0.003, size)))
    return high, low, close


def test_summary_and_running_equal_the_full_length_functions_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    for size in [*range(0, 60), 61, 120, 333, 700]:
        high, low, close = _random_series(rng, size)
        if size % 5 == 0 and size:
            close = np.round(close, 2)  # flat stretches: RSI without losses, zero changes
        full = ind.summary_full(high, low, close)
        running = ind.Running()
        i = 0
        while i < size:  # fed in uneven pieces, as snapshots feed it
            k = int(rng.integers(1, 40))
            running.extend(high[i:i + k].tolist(), low[i:i + k].tolist(),
                           close[i:i + k].tolist())
            i += k
        for got in (ind.summary(high, low, close), running.values()):
            assert list(got) == list(full)
            assert got == full, size  # == on floats: the same bits, not approximately


def test_the_running_bollinger_std_equals_numpys_bit_for_bit() -> None:
    """`Running` takes the standard deviation of its 20 closes without numpy: the same mean,
    deviations and pairwise sums, so the same float as `np.std`, over prices of every scale
    and spread (and the lengths around numpy's blocks of eight)."""
    rng = random.Random(17)
    for _ in range(20_000):
        n = rng.choice((8, 9, 15, 16, 17, 20, 20, 20, 23, 64, 127, 128))
        base = 10 ** rng.uniform(-5, 6)
        xs = [base * (1 + rng.gauss(0, 10 ** rng.uniform(-7, 0))) for _ in range(n)]
        assert ind._std(xs) == float(np.asarray(xs, dtype=np.float64).std())
    assert ind._std([1.0, 2.0, 4.0]) == float(np.std([1.0, 2.0, 4.0]))  # outside: numpy's own
    assert ind._std([5.0] * 20) == 0.0
