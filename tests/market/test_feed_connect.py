"""The feed when Binance cannot be reached: every failed attempt says where, which and when next;
/status says `connecting`; after a minute of failures one line tells how to run offline."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest
from structlog.testing import capture_logs

from engine.bus import Bus
from engine.clock import SimClock
from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.feed import Feed
from engine.market.reach import offline_command
from engine.settings import FeedSettings
from tests.support.feed import eventually


def closed_port() -> int:
    """Return a local port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_failed_connects_log_url_attempt_and_delay_and_status_says_connecting() -> None:
    s = FeedSettings(symbols=("BTCUSDT",), futures_ws_url=f"ws://127.0.0.1:{closed_port()}",
                     min_backoff_seconds=2, max_backoff_seconds=16, backfill_candles=0)
    clock = SimClock()
    feed = Feed(s, Bus(), clock, PriceBook(), CandleStore(s.max_candles), rng=random.Random(4))
    with capture_logs() as logs:
        task = asyncio.create_task(feed.run())
        try:
            for n in range(1, 13):
                await eventually(lambda n=n: feed.connect_attempts >= n, f"attempt {n}")
                if n < 12:
                    wake = clock.next_wakeup()
                    assert wake is not None
                    await clock.advance_to(wake)  # the back-off delay, and not a second more
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    failed = [e for e in logs if e["event"] == "feed.connect_failed"]
    assert [e["attempt"] for e in failed] == list(range(1, 13))
    assert all(e["url"] == feed.url and e["url"].startswith("ws://127.0.0.1:") for e in failed)
    assert all(e["log_level"] == "warning" and "ConnectionRefusedError" in e["error"]
               for e in failed)
    bases = [2, 4, 8] + [16] * 9
    assert all(b / 2 <= e["retry_in_s"] <= b for b, e in zip(bases, failed, strict=True))
    status = feed.status()
    assert (status["state"], status["connected"], status["connect_attempts"]) == (
        "connecting", False, 12)
    assert status["last_error"] == failed[-1]["error"]
    # At least 1 + 2 + 4 + 8 x 8 = 71 s pass between the first and the twelfth failure: past the
    # first minute of failures the hint comes once, not with every later attempt.
    hints = [e for e in logs if e["event"] == "feed.offline_hint"]
    assert len(hints) == 1
    assert hints[0]["hint"].endswith(offline_command())
    assert offline_command().endswith("run.py demo")
    assert hints[0]["failing_s"] >= 60
