"""One rate budget per LLM provider, shared by every run that writes to the same Postgres.

A token bucket per provider is one row of `rate_buckets` (migration 0007), taken with
`SELECT ... FOR UPDATE`, so concurrent runs (a sweep's processes, on one machine or on Ray) draw
from one budget: it holds at most `requests_per_minute` requests and `tokens_per_minute` tokens
and refills at those rates (wall time: providers count real minutes, even in a backtest). A call
takes one request and its tokens (the prompt at 4 characters a token, plus max_tokens), waiting
until the bucket holds them. A 429 empties the provider's bucket and sets `slow_until` to
`slow_down_seconds` from now: every run using the provider waits until then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import asyncpg
import structlog

log = structlog.get_logger("llm")

_MIN_WAIT_S = 0.05


class Limits(Protocol):  # read-only: the settings sections are frozen
    @property
    def requests_per_minute(self) -> float: ...

    @property
    def tokens_per_minute(self) -> float: ...

    @property
    def slow_down_seconds(self) -> float: ...


class WallClock(Protocol):
    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RateBudget:
    """Take requests and tokens from the providers' shared buckets before each live call."""

    def __init__(self, dsn: str, limits: Mapping[str, Limits], clock: WallClock) -> None:
        self._dsn = dsn
        self._limits = dict(limits)
        self._clock = clock
        self._pool: asyncpg.Pool | None = None
        self.waited_s = 0.0

    def covers(self, provider: str) -> bool:
        """Return True when `provider` has a budget."""
        return provider in self._limits

    async def _conn_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=0, max_size=1)
        return self._pool

    async def take(self, provider: str, tokens: float) -> float:
        """Wait until the bucket holds one request and `tokens`; take them; return the wait."""
        limits = self._limits.get(provider)
        if limits is None:
            return 0.0
        tokens = min(tokens, limits.tokens_per_minute)  # a call larger than a minute's budget
        waited = 0.0
        while True:
            wait = await self._try(provider, tokens, limits)
            if wait <= 0:
                break
            await self._clock.sleep(wait)
            waited += wait
        if waited:
            self.waited_s += waited
            log.info("llm.rate_waited", provider=provider, waited_s=round(waited, 3))
        return waited

    async def _try(self, provider: str, tokens: float, limits: Limits) -> float:
        now = self._clock.time()
        pool = await self._conn_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO rate_buckets (provider, requests, tokens, updated_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (provider) DO NOTHING",
                provider, limits.requests_per_minute, limits.tokens_per_minute, now)
            row = await conn.fetchrow(
                "SELECT requests, tokens, updated_at, slow_until FROM rate_buckets "
                "WHERE provider = $1 FOR UPDATE", provider)
            if row["slow_until"] > now:
                return float(row["slow_until"]) - now
            elapsed = max(0.0, now - float(row["updated_at"]))
            requests = min(limits.requests_per_minute,
                           row["requests"] + elapsed * limits.requests_per_minute / 60)
            have = min(limits.tokens_per_minute,
                       row["tokens"] + elapsed * limits.tokens_per_minute / 60)
            if requests >= 1 and have >= tokens:
                requests, have, wait = requests - 1, have - tokens, 0.0
            else:
                wait = max(_MIN_WAIT_S, (1 - requests) * 60 / limits.requests_per_minute,
                           (tokens - have) * 60 / limits.tokens_per_minute)
            await conn.execute(
                "UPDATE rate_buckets SET requests = $2, tokens = $3, updated_at = $4 "
                "WHERE provider = $1", provider, requests, have, now)
            return wait

    async def slow_down(self, provider: str) -> None:
        """A 429: empty the provider's bucket and hold every run off it for a while."""
        limits = self._limits.get(provider)
        if limits is None:
            return
        now = self._clock.time()
        until = now + limits.slow_down_seconds
        pool = await self._conn_pool()
        await pool.execute(
            "INSERT INTO rate_buckets (provider, requests, tokens, updated_at, slow_until, "
            "penalties) VALUES ($1, 0, 0, $2, $3, 1) ON CONFLICT (provider) DO UPDATE SET "
            "requests = 0, tokens = 0, updated_at = $2, "
            "slow_until = greatest(rate_buckets.slow_until, $3), "
            "penalties = rate_buckets.penalties + 1", provider, now, until)
        log.warning("llm.rate_limited", provider=provider, slow_until=until,
                    detail="every run using this provider waits")

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


def call_tokens(prompt: Any, max_tokens: int) -> float:
    """Return the tokens a call may use: its prompt at 4 characters a token, plus max_tokens."""
    return (len(prompt.system) + len(prompt.user)) / 4 + max_tokens
