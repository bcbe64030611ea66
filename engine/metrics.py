"""Prometheus metrics of the engine, in one registry that the control API serves at /metrics.

Components update counters and histograms directly (an increment is cheap enough for the price
path). State that already lives in the engine (trader status, paused, stale symbols, the writer,
the bus queues) is read at scrape time by `EngineCollector` from one view the app attaches, so
the hot path never updates a gauge for it. Durations are wall time (`time.perf_counter`), even
in a replay on simulated time. `_created` series are turned off. `render()` returns the
Prometheus text format.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from engine import __version__

disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)

# process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ... (Linux /proc)
PROCESS = ProcessCollector(registry=REGISTRY)
BUILD = Info("arena_build", "Engine version and Python version", registry=REGISTRY)
BUILD.info({"version": __version__, "python": platform.python_version(),
            "implementation": platform.python_implementation()})

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
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
    registry=REGISTRY,
)
LAST_CYCLE_OK = Gauge(
    "arena_last_cycle_success_timestamp_seconds",
    "Engine-clock time (epoch seconds) at which the last successful trading cycle ended",
    registry=REGISTRY,
)
JOB_RUNS = Counter(
    "arena_job_runs", "Job executions by job and status", ["job", "status"], registry=REGISTRY
)

# decisions
LLM_LATENCY = Histogram(
    "arena_llm_latency_seconds",
    "LLM call wall time by trader and model",
    ["trader", "model"],
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
    registry=REGISTRY,
)
LLM_TOKENS = Counter(
    "arena_llm_tokens", "LLM tokens by trader, model and kind", ["trader", "model", "kind"],
    registry=REGISTRY,
)
LLM_COST = Counter(
    "arena_llm_cost_usd", "LLM cost in USD by trader and model", ["trader", "model"],
    registry=REGISTRY,
)
DECISIONS = Counter(
    "arena_decisions",
    "Decided actions by trader, action, validity and the reason class of an invalid one",
    ["trader", "action", "valid", "reason"],
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "arena_rejections", "Actions refused by the risk manager or at fill time, by trader and rule",
    ["trader", "rule"], registry=REGISTRY,
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
    "Wall time of one writer flush",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
    registry=REGISTRY,
)
WRITER_ROWS = Counter(
    "arena_writer_rows", "Rows written to Postgres by table", ["table"], registry=REGISTRY
)

# the event loop (engine.loop_monitor)
LOOP_LAG = Histogram(
    "arena_loop_lag_seconds",
    "How late the event loop ran a timer (wall time): time it was blocked",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
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


# ------------------------------------------------------------------ invalid decisions

INVALID_REASONS = ("timeout", "http_429", "http_5xx", "http_4xx", "connection", "truncated",
                   "refusal", "parse", "schema", "cooldown", "error")
_HTTP = re.compile(r"^http (\d{3})\b")
_PARSE = ("empty answer", "invalid JSON", "no JSON object found")


def invalid_reason(error: str | None) -> str:
    """Return the reason class of an invalid decision's error text (see INVALID_REASONS)."""
    text = (error or "").strip()
    if text.startswith("timeout"):
        return "timeout"
    if m := _HTTP.match(text):
        code = int(m.group(1))
        return "http_429" if code == 429 else "http_5xx" if code >= 500 else "http_4xx"
    if text.startswith("connection error"):
        return "connection"
    if text.startswith("truncated"):
        return "truncated"
    if text.startswith("refusal"):
        return "refusal"
    if text.startswith(_PARSE):
        return "parse"
    if re.match(r"^[A-Za-z]+(Error|Exception)\b", text) or not text:
        return "error"  # a strategy raised, or no reason was given
    return "schema"  # the answer was JSON but not a valid decision


# ------------------------------------------------------------------ read at scrape time

TRADER_STATUSES = ("active", "cooldown", "suspended", "stopped", "disabled")
_STREAM_SUB = re.compile(r"^control\.stream\..*$")


@dataclass(frozen=True, slots=True)
class EngineView:
    """What the collector reads of a running engine at each scrape."""

    traders: Mapping[str, str] = field(default_factory=dict)  # name → one of TRADER_STATUSES
    paused: bool = False
    stale_symbols: int = 0
    writer: Mapping[str, Any] | None = None  # Writer.status()
    bus: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # Bus.stats()


def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    return {
        "status": GaugeMetricFamily(
            "arena_trader_status", "1 for the trader's current status, 0 for the others",
            labels=["trader", "status"]),
        "paused": GaugeMetricFamily("arena_paused", "1 while scheduled jobs are paused"),
        "stale": GaugeMetricFamily("arena_stale_symbols",
                                   "Symbols whose price is older than max_price_age_seconds"),
        "connected": GaugeMetricFamily("arena_writer_connected",
                                       "1 while the writer holds a Postgres connection"),
        "spilled": GaugeMetricFamily("arena_writer_spilled_rows",
                                     "Rows waiting in the spill file for Postgres to return"),
        "errors": CounterMetricFamily("arena_writer_errors", "Writer flush errors"),
        "depth": GaugeMetricFamily("arena_bus_queue_depth", "Events queued per bus subscriber",
                                   labels=["subscriber"]),
        "drops": CounterMetricFamily("arena_bus_dropped", "Events dropped per bus subscriber "
                                     "(drop_oldest policy)", labels=["subscriber"]),
        "backpressure": CounterMetricFamily(
            "arena_bus_backpressure", "Events queued over capacity per lossless subscriber",
            labels=["subscriber"]),
    }


class EngineCollector:
    """Reads the engine's state at scrape time from the view attached by the app."""

    def __init__(self) -> None:
        self._source: Callable[[], EngineView] | None = None

    def attach(self, source: Callable[[], EngineView] | None) -> None:
        """Read `source()` at every scrape (None detaches)."""
        self._source = source

    def describe(self) -> Iterator[Metric]:
        return iter(_families().values())

    def collect(self) -> Iterator[Metric]:
        fam = _families()
        view = self._source() if self._source is not None else None
        if view is not None:
            for name, status in sorted(view.traders.items()):
                for s in TRADER_STATUSES:
                    fam["status"].add_metric([name, s], 1.0 if s == status else 0.0)
            fam["paused"].add_metric([], 1.0 if view.paused else 0.0)
            fam["stale"].add_metric([], view.stale_symbols)
            if view.writer is not None:
                fam["connected"].add_metric([], 1.0 if view.writer.get("connected") else 0.0)
                fam["spilled"].add_metric([], view.writer.get("spilled_rows") or 0)
                fam["errors"].add_metric([], view.writer.get("errors") or 0)
            totals: dict[str, list[int]] = {}
            for sub, stats in view.bus.items():
                # One series for all browser streams, never one per connection.
                key = "control.stream" if _STREAM_SUB.match(sub) else sub
                t = totals.setdefault(key, [0, 0, 0])
                t[0] += stats.get("queued", 0)
                t[1] += stats.get("dropped", 0)
                t[2] += stats.get("backpressure", 0)
            for key, (queued, dropped, backpressure) in sorted(totals.items()):
                fam["depth"].add_metric([key], queued)
                fam["drops"].add_metric([key], dropped)
                fam["backpressure"].add_metric([key], backpressure)
        return iter(fam.values())


ENGINE = EngineCollector()
REGISTRY.register(ENGINE)


def exported_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Return every series name the registry exports (with `_total`, `_bucket`, ... suffixes)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count", ""), "info": ("_info",), "gauge": ("",),
                "stateset": ("",), "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
                "unknown": ("",)}
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def render() -> bytes:
    """Return all metrics in the Prometheus text format."""
    return generate_latest(REGISTRY)
