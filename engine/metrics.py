"""Prometheus metrics of the engine, in one registry that the control API serves at /metrics.

Components update these directly (a counter increment is cheap enough for the price path).
`render()` returns the Prometheus text format.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

# feed
TICKS = Counter(
    "arena_ticks", "Market frames applied to the price book", ["symbol", "kind"], registry=REGISTRY
)
DROPPED_FRAMES = Counter(
    "arena_dropped_frames", "Frames dropped as bad input", ["reason"], registry=REGISTRY
)
FEED_RECONNECTS = Counter("arena_feed_reconnects", "Websocket reconnects", registry=REGISTRY)
FEED_CONNECTED = Gauge("arena_feed_connected", "1 while the feed is connected", registry=REGISTRY)
PRICE_AGE = Gauge(
    "arena_price_age_seconds", "Age of the latest price per symbol", ["symbol"], registry=REGISTRY
)

# cycles and jobs
CYCLES = Counter("arena_cycles", "Trading cycles by status", ["status"], registry=REGISTRY)
CYCLE_DURATION = Histogram(
    "arena_cycle_duration_seconds",
    "Trading cycle wall time",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
    registry=REGISTRY,
)
JOB_RUNS = Counter(
    "arena_job_runs", "Job executions by job and status", ["job", "status"], registry=REGISTRY
)

# decisions
LLM_LATENCY = Histogram(
    "arena_llm_latency_seconds",
    "LLM call latency",
    ["model"],
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
    registry=REGISTRY,
)
LLM_TOKENS = Counter(
    "arena_llm_tokens", "LLM tokens by model and kind", ["model", "kind"], registry=REGISTRY
)
LLM_COST = Counter("arena_llm_cost_usd", "LLM cost in USD by model", ["model"], registry=REGISTRY)
DECISIONS = Counter(
    "arena_decisions",
    "Decided actions by action and validity",
    ["trader", "action", "valid"],
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "arena_rejections", "Actions refused by the risk manager, by rule", ["rule"], registry=REGISTRY
)

# broker
FILLS = Counter(
    "arena_fills", "Order fills by trader and reason", ["trader", "reason"], registry=REGISTRY
)
EQUITY = Gauge("arena_equity_usdt", "Equity per trader", ["trader"], registry=REGISTRY)

# writer
WRITER_BACKLOG = Gauge(
    "arena_writer_backlog_rows", "Rows waiting to reach Postgres", registry=REGISTRY
)
WRITER_FLUSH = Histogram(
    "arena_writer_flush_seconds",
    "Latency of one writer flush",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
    registry=REGISTRY,
)
WRITER_ROWS = Counter(
    "arena_writer_rows", "Rows written to Postgres by table", ["table"], registry=REGISTRY
)

# control API
CONTROL_REQUESTS = Counter(
    "arena_control_requests",
    "Control API requests by route and status",
    ["route", "method", "status"],
    registry=REGISTRY,
)
CONTROL_STREAM_CLIENTS = Gauge(
    "arena_control_stream_clients", "Browsers connected to the live event stream", registry=REGISTRY
)


def render() -> bytes:
    """Return all metrics in the Prometheus text format."""
    return generate_latest(REGISTRY)
