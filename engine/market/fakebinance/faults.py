"""What the fake Binance does wrong on purpose, so retry and healing tests need no server of
their own.

Set the fields of a `Faults` (the server's `faults`) before or during a test; each count is
used up as it fires:

- REST: the next `rate_limited` requests answer 429 and the next `banned` 418, both with
  `Retry-After: <retry_after>`; the next `server_errors` answer 503; every answer waits
  `delay_seconds` first (on the server's clock); klines opening inside a `missing_klines` span
  are left out of the answers (a hole in the exchange's own history).
- Websocket: the next `refuse_handshakes` handshakes answer 503; every `garbage_every`-th frame
  sent is preceded by a frame that is not JSON; the connection is aborted (no close frame)
  after `drop_after_frames` frames (once); market frames whose time falls inside a `gaps` span
  are never sent (a feed gap the engine must heal from REST).
"""

from __future__ import annotations

from dataclasses import dataclass, field

GARBAGE_FRAME = '{"stream": "btcusdt@bookTicker", "data": {"e": "bookTick'  # cut mid-object


@dataclass
class Faults:
    """The faults to inject; counts fall to zero as they fire."""

    rate_limited: int = 0  # REST: answer this many requests with 429 + Retry-After
    banned: int = 0  # REST: answer this many requests with 418 + Retry-After
    server_errors: int = 0  # REST: answer this many requests with 503
    retry_after: str = "1"  # the Retry-After header of 429 and 418, in seconds
    delay_seconds: float = 0.0  # REST: wait this long before each answer
    missing_klines: list[tuple[float, float]] = field(default_factory=list)  # [start, end)
    refuse_handshakes: int = 0  # websocket: answer this many handshakes with 503
    garbage_every: int = 0  # websocket: a non-JSON frame before every Nth frame (0: never)
    drop_after_frames: int | None = None  # websocket: abort the connection after N frames
    gaps: list[tuple[float, float]] = field(default_factory=list)  # [start, end): not sent

    def rest_refusal(self) -> tuple[int, dict[str, str]] | None:
        """Return the (status, headers) this REST request is refused with, or None."""
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return 429, {"Retry-After": self.retry_after}
        if self.banned > 0:
            self.banned -= 1
            return 418, {"Retry-After": self.retry_after}
        if self.server_errors > 0:
            self.server_errors -= 1
            return 503, {}
        return None

    def kline_missing(self, open_time: float) -> bool:
        """Return True when the kline opening at `open_time` is left out of REST answers."""
        return any(a <= open_time < b for a, b in self.missing_klines)

    def in_gap(self, t: float) -> bool:
        """Return True when a market frame of time `t` falls in a gap (never sent)."""
        return any(a <= t < b for a, b in self.gaps)
