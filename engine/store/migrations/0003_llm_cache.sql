-- The LLM answer cache (engine/traders/cache.py): one successful answer per provider, model,
-- request parameters and prompt hash (`key` = sha256 of the four), as the exchange the SDK
-- parses again on a hit. Written by the cache itself, not by the event writer.
CREATE TABLE llm_cache (
    key          text PRIMARY KEY,
    provider     text NOT NULL,
    model        text NOT NULL,
    params       jsonb NOT NULL,            -- {"max_tokens": ..., "temperature": ...}
    prompt_hash  text NOT NULL,
    record       json NOT NULL,             -- request, response (status, headers, body), latency_ms;
                                            -- json, not jsonb: the body's key order is the answer
    cost_usd     double precision NOT NULL, -- what the answer cost when it was asked
    latency_ms   double precision NOT NULL, -- wall time of the call that asked it
    created_at   timestamptz NOT NULL DEFAULT now(),
    hits         integer NOT NULL DEFAULT 0,
    saved_usd    double precision NOT NULL DEFAULT 0,
    last_hit_at  timestamptz
);

-- One row per answer served from the cache: what it would have cost. `id` is a UUIDv7 made at the
-- hit, so `run_spans` (0002) attributes each hit to its run like any other row; `ts` is the
-- engine clock (simulated time in a replay or backtest).
CREATE TABLE llm_cache_hits (
    id           uuid PRIMARY KEY,
    key          text NOT NULL REFERENCES llm_cache (key),
    trader       text NOT NULL,
    provider     text NOT NULL,
    model        text NOT NULL,
    prompt_hash  text NOT NULL,
    saved_usd    double precision NOT NULL,
    ts           timestamptz NOT NULL
);
CREATE INDEX llm_cache_hits_trader_ts ON llm_cache_hits (trader, ts);
