"""The LLM answer cache in Postgres: ask each unchanged prompt once, across runs.

Keyed by provider, model, request parameters (temperature, max_tokens) and prompt hash
(`cache_key`), table `llm_cache` (migration 0003). Only successful answers
(HTTP 200) are stored, as the exchange the SDK parses again on a hit. Each hit adds a row to
`llm_cache_hits` with the cost it saved (at the current `[llm.prices]`), counts it on the cached
row, and logs `llm.cache_hit`. A database that fails is logged (`llm.cache_error`) and the call
goes on as a miss: the cache never stops a trader.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import asyncpg
import orjson
import structlog

from engine.events import new_id

log = structlog.get_logger("llm")


def cache_key(provider: str, model: str, params: dict[str, Any], prompt_hash: str) -> str:
    """Return the cache key: sha256 of provider, model, request parameters and prompt hash."""
    text = json.dumps([provider, model, params, prompt_hash], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _ts(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _record_text(record: dict[str, Any]) -> str:
    """Return a record as JSON text (orjson: a recorded exchange is some 20 kB a call)."""
    try:
        return orjson.dumps(record).decode()
    except TypeError:  # what orjson refuses and json takes (integers past 64 bits)
        return json.dumps(record, ensure_ascii=False)


class LLMCache:
    """Answers by key from `llm_cache`; one small connection pool, opened on first use."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self.hits = 0
        self.misses = 0
        self.stored = 0
        self.errors = 0
        self.run_id: Any = None  # the run and arena each hit row names (migration 0007)
        self.arena_id: Any = None

    async def _conn_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=0, max_size=2)
        return self._pool

    async def get(self, provider: str, model: str, params: dict[str, Any],
                  prompt_hash: str) -> dict[str, Any] | None:
        """Return the cached record of this call, or None."""
        key = cache_key(provider, model, params, prompt_hash)
        try:
            pool = await self._conn_pool()
            text = await pool.fetchval("SELECT record FROM llm_cache WHERE key = $1", key)
        except (OSError, asyncpg.PostgresError) as exc:
            self._failed("get", exc)
            return None
        if text is None:
            self.misses += 1
            return None
        self.hits += 1
        return {**json.loads(text), "cache_key": key}

    async def put(self, record: dict[str, Any], cost_usd: float) -> None:
        """Store a successful live answer (the first one stays when two race)."""
        key = cache_key(record["provider"], record["model"], record["params"],
                        record["prompt_hash"])
        try:
            pool = await self._conn_pool()
            await pool.execute(
                "INSERT INTO llm_cache (key, provider, model, params, prompt_hash, record,"
                " cost_usd, latency_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (key) DO NOTHING",
                key, record["provider"], record["model"], json.dumps(record["params"]),
                record["prompt_hash"], _record_text(record), cost_usd,
                float(record["latency_ms"]))
        except (OSError, asyncpg.PostgresError) as exc:
            self._failed("put", exc)
            return
        self.stored += 1

    async def hit(self, record: dict[str, Any], trader: str, saved_usd: float,
                  ts: float) -> None:
        """Count a served answer: one `llm_cache_hits` row, and the cached row's totals."""
        key = record.get("cache_key") or cache_key(
            record["provider"], record["model"], record["params"], record["prompt_hash"])
        try:
            pool = await self._conn_pool()
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO llm_cache_hits (id, key, trader, provider, model, prompt_hash,"
                    " saved_usd, ts, run_id, arena_id)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    new_id(), key, trader, record["provider"], record["model"],
                    record["prompt_hash"], saved_usd, _ts(ts), self.run_id, self.arena_id)
                await conn.execute(
                    "UPDATE llm_cache SET hits = hits + 1, saved_usd = saved_usd + $2,"
                    " last_hit_at = now() WHERE key = $1", key, saved_usd)
        except (OSError, asyncpg.PostgresError) as exc:
            self._failed("hit", exc)

    def _failed(self, op: str, exc: BaseException) -> None:
        self.errors += 1
        log.warning("llm.cache_error", op=op, error=f"{type(exc).__name__}: {exc}",
                    detail="answered as a cache miss")

    async def aclose(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
