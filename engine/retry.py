"""One back-off for every retry loop: exponential, capped, jittered, waited on the engine clock.

The feed's reconnects, Binance REST retries and the writer's outage retries all use `Backoff`:
attempt n (0-based) waits a uniformly random time in [base/2, base], where base = low x 2^n capped
at high. The jitter keeps many clients (or many tests) from retrying in lock-step; each `Backoff`
owns its random generator, seedable for tests, and never touches the global `random` state.
"""

from __future__ import annotations

import random

from engine.clock import Clock


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Return the wait before retry `attempt` (0-based): doubling from `low`, capped, jittered."""
    base = min(high, low * (2.0 ** min(max(attempt, 0), 30)))
    return base / 2.0 + rng.random() * base / 2.0


class Backoff:
    """Counts failed attempts and returns (or waits) the jittered delay before the next one."""

    def __init__(self, low: float, high: float, *, rng: random.Random | None = None) -> None:
        if low < 0 or high <= 0:
            raise ValueError(f"back-off needs low >= 0 and high > 0, not {low}, {high}")
        self.low = low
        self.high = max(high, low)
        self.attempt = 0  # failures since the last success
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Return the delay before the next attempt and count this failure."""
        delay = backoff_delay(self.attempt, self.low, self.high, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start over after a success."""
        self.attempt = 0

    async def wait(self, clock: Clock) -> float:
        """Wait the next delay on the engine clock; return it."""
        delay = self.next_delay()
        await clock.sleep(delay)
        return delay
