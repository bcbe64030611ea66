"""The live market-data feed: one Binance combined-stream websocket that heals itself.

`run()` connects, backfills missing 1m candles over REST, streams frames into the price book,
the candle store and the bus, and reconnects on any drop with exponential back-off and jitter
(waiting on the engine clock), and on purpose after `reconnect_after_hours`. Every frame goes
through `handle_frame`, live or replayed, so both paths are the same code.
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK, InvalidStatus, InvalidURI

from engine import metrics
from engine.bus import Bus
from engine.clock import Clock
from engine.events import FeedStatus, Kline
from engine.market.binance import BinanceRest
from engine.market.book import PriceBook
from engine.market.candles import MINUTE, Candle, CandleStore
from engine.market.frames import FrameParser, stream_names
from engine.market.gaps import fetch_missing_bucket
from engine.market.hotpath import FrameHandler, Route, frame_handler
from engine.market.reach import offline_command
from engine.market.recording import FrameRecorder
from engine.retry import Backoff
from engine.settings import FeedSettings

log = structlog.get_logger("feed")

DROP_LOG_EVERY_S = 10.0  # at most one log line per drop reason this often
YIELD_EVERY = 64  # frames read between two yields to the loop
OFFLINE_HINT_AFTER_S = 60.0  # failing to connect this long logs how to run offline, once


class Feed:
    """Prices in: websocket (or replayed) frames → price book, candles and bus."""

    def __init__(self, settings: FeedSettings, bus: Bus, clock: Clock, book: PriceBook,
                 candles: CandleStore, *, record_path: str | None = None,
                 rest: BinanceRest | None = None, rng: random.Random | None = None) -> None:
        self.settings, self.bus, self.clock = settings, bus, clock
        self.book, self.candles, self.rest = book, candles, rest
        self.url = settings.ws_url.rstrip("/") + "/stream?streams=" + "/".join(
            stream_names(settings.symbols, settings.market))
        self._parser = FrameParser(settings.symbols, settings.market, settings.max_frame_bytes,
                                   stream=Route)
        self._recorder = FrameRecorder(record_path) if record_path else None
        # Every frame, live or replayed: `handle_frame(raw, recv_time)` parses one raw frame and
        # applies it to the book, the candles and the bus (or drops it); engine/market/hotpath.py.
        self.handle_frame: FrameHandler = frame_handler(
            self._parser, book=book, candles=candles, publish=bus.publish,
            on_hole=self._kline_hole, flush=self.flush_ticks, general=self._handle_general,
            record=self._recorder.write if self._recorder is not None else None)
        self._rng = rng or random.Random()
        self._tick_counters: dict[tuple[str, str], Any] = {}
        self._ticks_flushed: dict[tuple[str, str], int] = {}
        self.mode = "live"
        self.connected = False
        self.since: float | None = None
        self.reconnects = 0
        self.connect_attempts = 0  # failed connection attempts since the last connection
        self.last_error: str | None = None
        self._failing_since: float | None = None
        self._hinted = False
        self.dropped: dict[str, int] = {}
        self._drop_logged: dict[str, tuple[float, int]] = {}
        self._backfill_needed = asyncio.Event()
        self._backfilled_once = False
        self.last_backfill: dict[str, Any] | None = None

    @property
    def recorder(self) -> FrameRecorder | None:
        """The `--record` file this feed writes; the LLM session and cycle ids write to it too."""
        return self._recorder

    # ------------------------------------------------------------------ the hot path

    def _handle_general(self, raw: str | bytes, recv_time: float) -> None:
        """Apply a frame the fast path left to the general parser (or drop it)."""
        event = self._parser.parse(raw, recv_time)
        if type(event) is str:
            self._drop(event, raw, recv_time)
            return
        self.book.apply(event)  # type: ignore[arg-type]
        if type(event) is Kline and self.candles.apply_kline(event):
            self._kline_hole()
        self.bus.publish(event)

    def _kline_hole(self) -> None:
        if self.mode == "live":
            self._backfill_needed.set()  # a closed candle left a hole: fetch it

    @property
    def frames(self) -> int:
        """Return the frames handled so far: each became one event of a stream, or one drop."""
        return (sum(st.count for st in self._parser.streams.values())
                + sum(self.dropped.values()))

    def flush_ticks(self) -> None:
        """Add the events parsed since the last flush to the tick counters (each time one
        stream's count reaches a multiple of TICK_FLUSH_EVERY, at status and at the end of a
        replay; not per frame)."""
        for key, n in self._parser.counts().items():
            done = self._ticks_flushed.get(key, 0)
            if n > done:
                counter = self._tick_counters.get(key)
                if counter is None:
                    counter = self._tick_counters[key] = metrics.TICKS.labels(
                        symbol=key[0], kind=key[1])
                counter.inc(n - done)
                self._ticks_flushed[key] = n

    def _drop(self, reason: str, raw: str | bytes, now: float) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        metrics.DROPPED_FRAMES.labels(reason=reason).inc()
        logged_at, suppressed = self._drop_logged.get(reason, (-math.inf, 0))
        if now - logged_at >= DROP_LOG_EVERY_S:
            log.warning("feed.frame_dropped", reason=reason, suppressed=suppressed,
                        total=self.dropped[reason], sample=_text(raw[:120]))
            self._drop_logged[reason] = (now, 0)
        else:
            self._drop_logged[reason] = (logged_at, suppressed + 1)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """Return connection state, reconnects, drops by reason and per-symbol price age."""
        now = self.clock.time()
        self.flush_ticks()
        ages: dict[str, float | None] = {}
        for symbol in self.settings.symbols:
            age = self.book.age(symbol, now)
            ages[symbol] = None if math.isinf(age) else round(age, 3)
            if not math.isinf(age):
                metrics.PRICE_AGE.labels(symbol=symbol).set(age)
        return {
            "mode": self.mode,
            "state": "connected" if self.connected else (
                "connecting" if self.mode == "live" else "stopped"),
            "connected": self.connected,
            "connect_attempts": self.connect_attempts,
            "last_error": self.last_error,
            "since": self.since,
            "reconnects": self.reconnects,
            "url": self.url,
            "frames": self.frames,
            "dropped": dict(sorted(self.dropped.items())),
            "price_age": ages,
            "stale": self.book.stale(now, self.settings.max_price_age_seconds,
                                     self.settings.symbols),
            "last_backfill": self.last_backfill,
        }

    def _set_state(self, state: str, detail: str = "", gap: float = 0.0) -> None:
        now = self.clock.time()
        if state == "connected":
            self.connected, self.since = True, now
            metrics.FEED_CONNECTED.set(1)
        elif state == "disconnected":
            self.connected = False
            metrics.FEED_CONNECTED.set(0)
        self.bus.publish(FeedStatus(state=state, ts=now, detail=detail,  # type: ignore[arg-type]
                                    gap_seconds=gap))

    # ------------------------------------------------------------------ replay hooks

    def start_replay(self, path: str) -> None:
        """Mark the feed as driven by a recorded file (no websocket, no backfill)."""
        self.mode = "replay"
        self.url = f"replay:{path}"
        self._set_state("connected", detail="replay")
        log.info("feed.connected", url=self.url, mode="replay")

    def end_replay(self, frames: int) -> None:
        """Mark the end of a replayed file and flush any recording."""
        self._set_state("disconnected", detail="replay finished")
        log.info("feed.disconnected", url=self.url, reason="replay finished", frames=frames)
        self.close()

    def replay_backfill(self, record: dict[str, Any], recv_time: float) -> None:
        """Apply a recorded backfill (candles the live run fetched over REST)."""
        try:
            symbol, interval = str(record["symbol"]), str(record["interval"])
            rows = [Candle(*map(float, row)) for row in record["candles"]]
        except (KeyError, TypeError, ValueError):
            self._drop("bad_backfill_record", str(record), recv_time)
            return
        self.apply_backfill(symbol, interval, rows, recv_time)

    def apply_backfill(self, symbol: str, interval: str, rows: list[Candle],
                       recv_time: float) -> int:
        """Merge fetched candles into the series (and the recording); return how many were new."""
        if self._recorder is not None and rows:
            self._recorder.write_backfill(symbol, interval, rows, recv_time)
        if interval == "1m":
            return self.candles.merge(symbol, rows)
        self.candles.merge_higher(symbol, interval, rows)
        return len(rows)

    def close(self) -> None:
        """Flush the tick counters; flush and close the recording, if any."""
        self.flush_ticks()
        if self._recorder is not None:
            self._recorder.close()

    # ------------------------------------------------------------------ backfill

    async def backfill(self) -> None:
        """Fetch over REST every closed 1m candle missing up to the last closed minute."""
        rest = self._rest()
        end = math.floor(self.clock.time() / MINUTE) * MINUTE - MINUTE
        initial = not self._backfilled_once
        results = await asyncio.gather(*(self._backfill_symbol(rest, s, end, initial)
                                         for s in self.settings.symbols))
        if initial and self.settings.backfill_higher_candles:
            await asyncio.gather(*(self._backfill_higher(rest, s, tf)
                                   for s in self.settings.symbols
                                   for tf in self.settings.timeframes))
        await asyncio.gather(*(fetch_missing_bucket(self, rest, s, tf)  # a hole in a timeframe
                               for s in self.settings.symbols for tf in self.settings.timeframes))
        self._backfilled_once = True
        missing = sum(r[0] for r in results)
        added = sum(r[1] for r in results)
        gap = max((r[2] for r in results), default=0.0)
        if not missing and not initial:
            return
        self.last_backfill = {"ts": self.clock.time(), "missing": missing, "added": added,
                              "gap_s": gap, "initial": initial}
        log.info("feed.backfilled", candles=added, missing=missing, gap_s=gap, initial=initial)
        self._set_state("backfilled", detail=f"{added} candles", gap=gap)

    async def _backfill_symbol(self, rest: BinanceRest, symbol: str, end: float,
                               initial: bool) -> tuple[int, int, float]:
        window = min(self.settings.max_candles, max(self.settings.backfill_candles, 1))
        first_kept = self.candles.closed(symbol)[:1]
        if initial or not first_kept:
            start = end - (window - 1) * MINUTE if self.settings.backfill_candles else None
        else:
            start = first_kept[0].open_time
        if start is None:
            return 0, 0, 0.0
        ranges = self.candles.missing(symbol, start, end)
        missing = added = 0
        gap = 0.0
        for first, last in ranges:
            count = int((last - first) // MINUTE) + 1
            missing += count
            gap = max(gap, count * MINUTE)
            rows = await rest.closed_klines(symbol, first, last)
            added += self.apply_backfill(symbol, "1m", rows, self.clock.time())
        return missing, added, gap

    async def _backfill_higher(self, rest: BinanceRest, symbol: str, tf: str) -> None:
        # closed as Binance's clock says (closeTime < server time), never the local clock
        rows = await rest.klines(symbol, tf, limit=self.settings.backfill_higher_candles + 1,
                                 closed_only=True)
        self.apply_backfill(symbol, tf, rows, self.clock.time())

    def _rest(self) -> BinanceRest:
        if self.rest is None:
            self.rest = BinanceRest(self.settings, self.clock)
        return self.rest

    async def _backfill_loop(self) -> None:
        backoff = Backoff(max(self.settings.min_backoff_seconds, 1.0),
                          self.settings.max_backoff_seconds, rng=self._rng)
        while True:
            await self._backfill_needed.wait()
            self._backfill_needed.clear()
            try:
                await self.backfill()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # isolation boundary: a failed backfill is retried
                delay = backoff.next_delay()
                log.error("feed.backfill_failed", error=repr(exc), retry_in_s=round(delay, 2))
                await self.clock.sleep(delay)
                self._backfill_needed.set()

    # ------------------------------------------------------------------ the connection

    async def run(self) -> None:
        """Connect, backfill, stream and reconnect until cancelled."""
        backfiller = asyncio.create_task(self._backfill_loop(), name="feed-backfill")
        backoff = Backoff(self.settings.min_backoff_seconds, self.settings.max_backoff_seconds,
                          rng=self._rng)
        try:
            while True:
                reason = await self._connect_once()
                if reason != "failed":  # planned, or the connection worked and then dropped
                    backoff.reset()
                    self.connect_attempts, self._failing_since = 0, None
                    if reason == "planned":
                        continue
                delay = backoff.next_delay()
                if reason == "failed":
                    self._connect_failed(delay)
                await self.clock.sleep(delay)
        finally:
            backfiller.cancel()
            await asyncio.gather(backfiller, return_exceptions=True)
            if self.connected:
                self._set_state("disconnected", detail="stopped")
            if self.rest is not None:
                await self.rest.close()
            self.close()

    async def _connect_once(self) -> str:
        """Run one connection; return "planned", "connected" (then dropped) or "failed"."""
        opened = False
        try:
            async with connect(self.url, max_size=self.settings.max_frame_bytes * 16,
                               open_timeout=self.settings.rest_timeout_seconds,
                               ping_interval=20, ping_timeout=20, close_timeout=2,
                               compression=None) as ws:
                opened = True
                if self.since is not None:
                    self.reconnects += 1
                    metrics.FEED_RECONNECTS.inc()
                self._set_state("connected", detail=self.url)
                self.last_error = None
                log.info("feed.connected", url=self.url, reconnects=self.reconnects)
                self._backfill_needed.set()
                if await self._stream(ws):
                    log.info("feed.disconnected", reason="planned reconnect",
                             after_h=self.settings.reconnect_after_hours)
                    self._set_state("disconnected", detail="planned reconnect")
                    return "planned"
                raise ConnectionError("server closed the connection")
        except asyncio.CancelledError:
            raise
        except InvalidURI:
            raise  # a misconfigured URL will not heal by retrying
        except Exception as exc:  # isolation boundary: any connection failure reconnects
            status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
            if opened:
                self.last_error = repr(exc)[:200]
                log.warning("feed.disconnected", reason=repr(exc))
                self._set_state("disconnected", detail=repr(exc)[:200])
            else:
                self.last_error = repr(exc)[:200] + (f" (HTTP {status})" if status else "")
            return "connected" if opened else "failed"

    def _connect_failed(self, retry_in: float) -> None:
        """Log one failed connection attempt; after a minute of them, say how to run offline."""
        now = self.clock.time()
        self.connect_attempts += 1
        if self._failing_since is None:
            self._failing_since = now
        log.warning("feed.connect_failed", url=self.url, attempt=self.connect_attempts,
                    retry_in_s=round(retry_in, 3), error=self.last_error)
        if not self._hinted and now - self._failing_since >= OFFLINE_HINT_AFTER_S:
            self._hinted = True
            log.warning("feed.offline_hint", failing_s=round(now - self._failing_since, 1),
                        hint=f"Binance unreachable; to run offline: {offline_command()}")

    async def _stream(self, ws: ClientConnection) -> bool:
        """Read frames until the connection drops (raise/False) or the planned reconnect (True)."""
        timer = asyncio.ensure_future(self.clock.sleep(self.settings.reconnect_after_hours * 3600))
        reader = asyncio.ensure_future(self._read(ws))
        try:
            await asyncio.wait({timer, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (timer, reader):
                task.cancel()
            await asyncio.gather(timer, reader, return_exceptions=True)
        if reader.done() and not reader.cancelled():
            reader.result()  # re-raise why the connection ended
            return False
        return True

    async def _read(self, ws: ClientConnection) -> None:
        # recv(decode=False): the frame's bytes, decoded by msgspec with no str made in between
        # (a text frame that is not UTF-8 is then dropped as not_json); a normal close ends the
        # loop, as `async for message in ws` would.
        handle, now, recv = self.handle_frame, self.clock.time, ws.recv
        n = 0
        try:
            while True:
                handle(await recv(False), now())
                n += 1
                if n == YIELD_EVERY:
                    n = 0
                    await asyncio.sleep(0)  # let subscribers run during a burst
        except ConnectionClosedOK:
            return


def _text(raw: str | bytes) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
