"""A synthetic market: Binance USD-M combined-stream frames from a seeded random walk.

Frames are shaped exactly like Binance's (`{"stream": "btcusdt@bookTicker", "data": {...}}` with
bookTicker, kline_1m, markPrice@1s and 24hrTicker payloads, prices as strings at each symbol's
tick size) and written in the recorded-frame format (`{"t": recv_time, "raw": frame}` per line),
so a generated file replays exactly like a recorded one. Rates are reduced from Binance's (which
sends hundreds of book updates a second) to keep files small; the 1m candles still close every
minute. Usage:

    python -m engine.market.marketgen --hours 1.5 --out tests/data/sample.jsonl.gz
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import math
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson

from engine.market.candles import Candle, resample, timeframe_seconds
from engine.market.recording import Record

DEFAULT_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z

# symbol -> (start price, price decimals, quantity decimals, annual volatility)
PROFILES: dict[str, tuple[float, int, int, float]] = {
    "BTCUSDT": (95_000.0, 1, 3, 0.55),
    "ETHUSDT": (3_300.0, 2, 3, 0.70),
    "SOLUSDT": (190.0, 2, 2, 0.90),
    "BNBUSDT": (690.0, 2, 2, 0.55),
    "XRPUSDT": (2.2, 4, 1, 0.90),
    "DOGEUSDT": (0.32, 5, 0, 1.00),
}
_YEAR_S = 365 * 86400


@dataclass(frozen=True, slots=True)
class Rates:
    """Frames per symbol: book updates per second (Poisson) and every-N-seconds streams."""

    book_per_s: float = 0.3
    kline_every_s: float = 3.0  # Binance: 250 ms
    mark_every_s: float = 3.0  # Binance: 1 s
    ticker_every_s: float = 5.0  # Binance: 1 s or faster


_DEFAULT_RATES = Rates()


class _Symbol:
    def __init__(self, name: str, rng: random.Random) -> None:
        price, self.pd, self.qd, vol = PROFILES.get(name, (100.0, 2, 2, 0.8))
        self.name, self.lower = name, name.lower()
        self.rng = rng
        self.price = price * math.exp(rng.gauss(0, 0.01))
        self.sigma = vol / math.sqrt(_YEAR_S)
        self.tick = 10.0**-self.pd
        self.spread_ticks = 1
        self.update_id = rng.randrange(10**9, 10**10)
        self.funding = 0.0001
        self.open_24h = self.price * math.exp(rng.gauss(0, 0.02))
        self.high_24h = max(self.price, self.open_24h) * (1 + abs(rng.gauss(0, 0.01)))
        self.low_24h = min(self.price, self.open_24h) * (1 - abs(rng.gauss(0, 0.01)))
        self.volume_24h = 1e7 / price * rng.uniform(0.5, 2.0)
        self.trades = rng.randrange(10**8, 10**9)
        self.minute: int | None = None
        self.o = self.h = self.l = self.c = self.v = 0.0
        self.n = 0

    def step(self, dt: float, t: float) -> None:
        self.price *= math.exp(self.sigma * math.sqrt(dt) * self.rng.gauss(0, 1))
        qty = abs(self.rng.gauss(0, 1)) * 2e4 / self.price * dt
        minute = int(t) // 60 * 60
        if minute != self.minute:
            self.minute, self.n = minute, 0
            self.o = self.h = self.l = self.c = self.price
            self.v = 0.0
        self.h, self.l, self.c = max(self.h, self.price), min(self.l, self.price), self.price
        self.v += qty
        self.n += 1
        self.volume_24h += qty
        self.high_24h = max(self.high_24h, self.price)
        self.low_24h = min(self.low_24h, self.price)
        self.funding = min(0.003, max(-0.003, self.funding + self.rng.gauss(0, 2e-7)))

    def history(self, start: float, minutes: int, higher: dict[str, int]) -> dict[str, list[Any]]:
        """Walk the price up to `start`; return closed candles per interval, as a backfill has."""
        span = max([minutes * 60] + [n * timeframe_seconds(tf) + minutes * 60
                                     for tf, n in higher.items()])
        first = (int(start) - span) // 14_400 * 14_400  # whole 4h buckets
        rows: list[Candle] = []
        sigma = self.sigma * math.sqrt(60)
        price = self.price
        for t in range(first, int(start) // 60 * 60, 60):
            o = price
            price *= math.exp(sigma * self.rng.gauss(0, 1))
            wick = abs(self.rng.gauss(0, sigma / 2)) * price
            h = max(o, price) + wick
            lo = min(o, price) - wick * self.rng.random()
            vol = abs(self.rng.gauss(1, 0.3)) * 1.2e6 / price
            rows.append(Candle(float(t), float(self.p(o)), float(self.p(h)), float(self.p(lo)),
                               float(self.p(price)), float(self.q(vol))))
        self.price = price
        if rows:  # the rolling 24 h statistics continue from this history
            day = rows[-1440:]
            self.open_24h = day[0].open
            self.high_24h = max(c.high for c in day)
            self.low_24h = min(c.low for c in day)
            self.volume_24h = sum(c.volume for c in day)
        out: dict[str, list[Any]] = {"1m": rows[-minutes:] if minutes else []}
        for tf, n in higher.items():
            # Every bucket closed by the start, as Binance's klines answer a live backfill:
            # the ones the 1m history covers too, so none is missing where the two meet.
            sec = timeframe_seconds(tf)
            done = [c for c in resample(rows, sec) if c.open_time + sec <= start]
            out[tf] = done[-n:] if n else []
        return out

    def p(self, x: float) -> str:
        return f"{round(x / self.tick) * self.tick:.{self.pd}f}"

    def q(self, x: float) -> str:
        return f"{max(x, 10.0**-self.qd):.{self.qd}f}"

    def book(self, e: int) -> dict[str, Any]:
        self.update_id += self.rng.randrange(1, 50)
        bid = math.floor(self.price / self.tick) * self.tick
        ask = bid + self.tick * self.spread_ticks
        return {"e": "bookTicker", "u": self.update_id, "E": e, "T": e - self.rng.randrange(1, 4),
                "s": self.name, "b": self.p(bid), "B": self.q(self.rng.expovariate(1) * 1e4 / bid),
                "a": self.p(ask), "A": self.q(self.rng.expovariate(1) * 1e4 / ask)}

    def kline(self, e: int, closed: bool) -> dict[str, Any]:
        assert self.minute is not None
        t = self.minute * 1000
        quote = self.v * self.c
        return {"e": "kline", "E": e, "s": self.name, "k": {
            "t": t, "T": t + 59_999, "s": self.name, "i": "1m", "f": self.trades,
            "L": self.trades + self.n, "o": self.p(self.o), "c": self.p(self.c),
            "h": self.p(self.h), "l": self.p(self.l), "v": self.q(self.v), "n": self.n,
            "x": closed, "q": f"{quote:.4f}", "V": self.q(self.v / 2), "Q": f"{quote / 2:.4f}",
            "B": "0"}}

    def mark(self, e: int) -> dict[str, Any]:
        next_funding = (e // 28_800_000 + 1) * 28_800_000  # 00:00, 08:00, 16:00 UTC
        index = self.price * (1 - self.rng.gauss(0, 5e-5))
        return {"e": "markPriceUpdate", "E": e, "s": self.name, "p": f"{self.price:.8f}",
                "i": f"{index:.8f}", "P": f"{index:.8f}", "r": f"{self.funding:.8f}",
                "T": next_funding}

    def ticker(self, e: int) -> dict[str, Any]:
        change = self.price - self.open_24h
        vol = self.volume_24h
        self.trades += self.n
        return {"e": "24hrTicker", "E": e, "s": self.name, "p": self.p(change),
                "P": f"{100 * change / self.open_24h:.3f}", "w": self.p(self.price),
                "c": self.p(self.price), "Q": self.q(0.01 * vol / 1e4), "o": self.p(self.open_24h),
                "h": self.p(self.high_24h), "l": self.p(self.low_24h), "v": f"{vol:.{self.qd}f}",
                "q": f"{vol * self.price:.2f}", "O": e - 86_400_000, "C": e,
                "F": self.trades - 10**6,
                "L": self.trades, "n": 10**6}


def _frame(stream: str, data: dict[str, Any]) -> str:
    return orjson.dumps({"stream": stream, "data": data}).decode()


def generate(symbols: tuple[str, ...] = tuple(PROFILES), *, start: float = DEFAULT_START,
             hours: float = 1.0, seed: int = 7, rates: Rates = _DEFAULT_RATES,
             history_minutes: int = 1000, higher_timeframes: tuple[str, ...] = ("15m", "4h"),
             higher_candles: int = 100) -> Iterator[tuple[float, Record]]:
    """Yield (receive time, raw frame or backfill record) for `hours` of synthetic market.

    The file opens with the candle history a live run would backfill over REST:
    `history_minutes` closed 1m candles and the newest `higher_candles` closed candles per
    higher timeframe (every bucket closed by the start, so the timeframes have no hole).
    """
    rng = random.Random(seed)
    syms = [_Symbol(s, rng) for s in symbols]
    end = start + hours * 3600
    t = float(int(start))
    higher = {tf: higher_candles for tf in higher_timeframes}
    for s in syms:
        for interval, rows in s.history(t, history_minutes, higher).items():
            if rows:
                yield t, {"symbol": s.name, "interval": interval,
                          "candles": [list(c) for c in rows]}
    recv = t
    every = {"kline": rates.kline_every_s, "mark": rates.mark_every_s,
             "ticker": rates.ticker_every_s}
    next_due = {(s.name, k): t + rng.uniform(0, v) for s in syms for k, v in every.items()}
    while t < end:
        batch: list[tuple[int, str, dict[str, Any]]] = []  # (exchange ms, stream, data)
        second_ms = int(t * 1000)
        for s in syms:
            # The candle of the minute that just ended closes first, before prices move on.
            if s.minute is not None and int(t) // 60 * 60 != s.minute:
                e = second_ms + rng.randrange(0, 5)
                batch.append((e, f"{s.lower}@kline_1m", s.kline(e, closed=True)))
            s.step(1.0, t)
            book_times = sorted(second_ms + rng.randrange(10, 1000)
                                for _ in range(_poisson(rng, rates.book_per_s)))
            for e in book_times:  # in time order, so update ids grow with event time
                batch.append((e, f"{s.lower}@bookTicker", s.book(e)))
            for kind, stream, make in (("kline", "kline_1m", lambda e, s=s: s.kline(e, False)),
                                       ("mark", "markPrice@1s", s.mark),
                                       ("ticker", "ticker", s.ticker)):
                key = (s.name, kind)
                if next_due[key] <= t:
                    next_due[key] += every[kind]
                    e = second_ms + rng.randrange(10, 1000)
                    batch.append((e, f"{s.lower}@{stream}", make(e)))
        batch.sort(key=lambda item: item[0])
        for e, stream, data in batch:
            # The local receive time adds network latency, and never goes backwards.
            recv = max(recv, e / 1000.0 + 0.005 + rng.expovariate(1 / 0.015))
            yield round(recv, 6), _frame(stream, data)
        t += 1.0


def _poisson(rng: random.Random, lam: float) -> int:
    k, p, limit = 0, rng.random(), math.exp(-lam)
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def write(path: str | Path, frames: Iterator[tuple[float, Record]]) -> int:
    """Write frames in the recorded-frame format (gzip if `path` ends in .gz); return the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "wb") as raw, contextlib.ExitStack() as stack:
        fh: IO[bytes] = raw
        if path.suffix == ".gz":  # mtime 0: the same seed gives the same bytes
            fh = cast(IO[bytes], stack.enter_context(
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)))
        for t, item in frames:
            key = "raw" if isinstance(item, str) else "backfill"
            fh.write(orjson.dumps({"t": t, key: item}))
            fh.write(b"\n")
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    """Generate a synthetic recorded-frame file."""
    ap = argparse.ArgumentParser(prog="python -m engine.market.marketgen",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--hours", type=float, default=1.0, help="length of market to generate")
    ap.add_argument("--out", required=True, help="output file (.jsonl or .jsonl.gz)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--start", type=float, default=DEFAULT_START, help="start, epoch seconds")
    ap.add_argument("--symbols", default=",".join(PROFILES), help="comma-separated symbols")
    ap.add_argument("--history-minutes", type=int, default=1000,
                    help="closed 1m candles of history at the start (a live run's backfill)")
    ap.add_argument("--higher-candles", type=int, default=100,
                    help="closed 15m and 4h candles of history at the start")
    ap.add_argument("--book-per-s", type=float, default=_DEFAULT_RATES.book_per_s)
    ap.add_argument("--kline-every-s", type=float, default=_DEFAULT_RATES.kline_every_s)
    ap.add_argument("--mark-every-s", type=float, default=_DEFAULT_RATES.mark_every_s)
    ap.add_argument("--ticker-every-s", type=float, default=_DEFAULT_RATES.ticker_every_s)
    args = ap.parse_args(argv)
    rates = Rates(args.book_per_s, args.kline_every_s, args.mark_every_s, args.ticker_every_s)
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
    count = write(args.out, generate(symbols, start=args.start, hours=args.hours,
                                     seed=args.seed, rates=rates,
                                     history_minutes=args.history_minutes,
                                     higher_candles=args.higher_candles))
    size = Path(args.out).stat().st_size
    print(f"wrote {count} frames ({size / 1e6:.2f} MB) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
