"""Alerts: the engine's important moments sent to webhooks, never holding up the loop.

`Alerts` subscribes to the bus when built (job runs, trader cool-downs, the feed's status,
fills, account snapshots) and, every `check_interval_seconds` of engine time, asks a probe for
the price ages and the writer's state. What deserves an alert becomes an `Alert`; one below
`min_level` is ignored, one whose kind and subject were sent within `dedup_seconds` is counted as
a duplicate, one beyond `rate_limit_per_minute` is dropped (logged), and the rest wait in a
bounded queue. Each (alert, webhook) delivery is its own task: a slow webhook delays only itself.
A failed delivery (network error, timeout, 429, 5xx) is retried with exponential back-off on the
engine clock (tenacity), then dropped with an `alerts.dropped` log line; another 4xx is dropped
at once. The engine's start and stop are alerts too: the stop one is sent while `run()` is being
cancelled, within `timeout_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from engine import logging as arena_logging
from engine.bus import Bus
from engine.clock import Clock
from engine.events import (
    AccountSnapshot,
    FeedStatus,
    JobRun,
    OrderFilled,
    TraderBudgetReached,
    TraderCooldown,
)
from engine.output_settings import AlertSettings
from engine.web.webhooks import LEVELS, Alert, Refused, Transient, Webhook

log = structlog.get_logger("alerts")

Probe = Callable[[], Mapping[str, Any]]  # {"price_age": {symbol: s | None}, "writer": {...}}
MAX_CONCURRENT = 8  # deliveries in flight at once


class Alerts:
    """Turns events into alerts and delivers them to the configured webhooks."""

    def __init__(self, settings: AlertSettings, bus: Bus, clock: Clock,
                 env: Mapping[str, str], *, probe: Probe | None = None) -> None:
        self.settings, self.clock, self.probe = settings, clock, probe
        self.webhooks: list[Webhook] = []
        for ws in settings.webhooks:
            hook = Webhook.resolve(ws, env)
            if hook is None:
                log.warning("alerts.webhook_unset", env=ws.url_env, format=ws.format,
                            detail="the environment variable is empty; this webhook is skipped")
                continue
            arena_logging.register_secrets(hook.secrets())
            self.webhooks.append(hook)
        self._sub = bus.subscribe(
            "alerts", [JobRun, TraderCooldown, TraderBudgetReached, FeedStatus, OrderFilled,
                       AccountSnapshot],
            capacity=10_000, policy="drop_oldest")
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(settings.queue_size)
        self._last_sent: dict[tuple[str, str], float] = {}
        self._sent_times: deque[float] = deque()
        self._started_at = clock.time()
        self._inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self.counts = {"raised": 0, "sent": 0, "duplicates": 0, "rate_limited": 0,
                       "queue_full": 0, "dropped": 0, "below_level": 0}

    # ------------------------------------------------------------ raising

    def raise_alert(self, alert: Alert) -> bool:
        """Queue an alert for sending (never waits); return whether it was queued."""
        c = self.counts
        if LEVELS[alert.level] < LEVELS[self.settings.min_level]:
            c["below_level"] += 1
            return False
        c["raised"] += 1
        last = self._last_sent.get(alert.key)
        if last is not None and alert.ts - last < self.settings.dedup_seconds:
            c["duplicates"] += 1
            return False
        while self._sent_times and alert.ts - self._sent_times[0] >= 60:
            self._sent_times.popleft()
        if len(self._sent_times) >= self.settings.rate_limit_per_minute:
            c["rate_limited"] += 1
            log.warning("alerts.rate_limited", kind=alert.kind, subject=alert.subject,
                        limit_per_minute=self.settings.rate_limit_per_minute)
            return False
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            c["queue_full"] += 1
            log.warning("alerts.queue_full", kind=alert.kind, subject=alert.subject)
            return False
        self._last_sent[alert.key] = alert.ts
        self._sent_times.append(alert.ts)
        log.info("alert.raised", kind=alert.kind, level=alert.level, subject=alert.subject,
                 text=alert.text)
        return True

    def _alert(self, kind: str, level: str, subject: str, text: str, **fields: Any) -> None:
        self.raise_alert(Alert(kind, level, subject, text, self.clock.time(), fields))

    def on_event(self, event: Any) -> None:
        """Raise the alert an event calls for, if any."""
        if isinstance(event, JobRun) and event.status in ("failed", "timeout"):
            self._alert("job_failed", "warning", event.job,
                        f"job {event.job} {event.status}: {event.error or 'no detail'}",
                        status=event.status, error=event.error)
        elif isinstance(event, TraderCooldown):
            self._alert("trader_cooldown", "warning", event.trader,
                        f"trader {event.trader} is cooling down after {event.failures} failed "
                        f"answers in a row: {event.last_error or 'no detail'}",
                        until=event.until, failures=event.failures)
        elif isinstance(event, TraderBudgetReached):
            self._alert("trader_budget", "warning", event.trader,
                        f"trader {event.trader} reached its spend cap {event.cap} "
                        f"({event.spent_usd:.2f} of {event.cap_usd:.2f} USD) and holds",
                        cap=event.cap, until=event.until)
        elif isinstance(event, FeedStatus) and event.state == "disconnected":
            self._alert("feed_disconnected", "warning", "feed",
                        f"market feed disconnected: {event.detail or 'no detail'}")
        elif isinstance(event, OrderFilled) and event.reason == "liquidation":
            self._alert("liquidation", "critical", str(event.id),
                        f"{event.trader} was liquidated on {event.symbol}: {event.qty:g} at "
                        f"{event.price:g} (realized {event.realized_pnl:+,.2f} USDT)",
                        trader=event.trader, symbol=event.symbol)
        elif (isinstance(event, AccountSnapshot)
              and event.drawdown_pct > self.settings.drawdown_pct):
            self._alert("drawdown", "warning", event.trader,
                        f"{event.trader} is {event.drawdown_pct:.1f}% below its peak equity "
                        f"(alert above {self.settings.drawdown_pct:g}%); equity "
                        f"{event.equity:,.2f} USDT", equity=event.equity,
                        drawdown_pct=event.drawdown_pct)

    def check(self) -> None:
        """Look at price ages and the writer through the probe; raise what is wrong."""
        if self.probe is None:
            return
        state = self.probe()
        limit = self.settings.stale_symbol_seconds
        up = self.clock.time() - self._started_at
        for symbol, age in sorted((state.get("price_age") or {}).items()):
            if (age is not None and age > limit) or (age is None and up > limit):
                shown = "never seen" if age is None else f"{age:.0f}s old"
                self._alert("symbol_stale", "warning", symbol,
                            f"{symbol} price is stale ({shown}; limit {limit:g}s)", age_s=age)
        writer = state.get("writer")
        if writer and writer.get("halted"):  # storage cannot record: trading stands still
            refused = writer.get("refused")
            self._alert("trading_halted", "critical", "storage",
                        f"trading {writer['halted'].removeprefix('halted: ')}"
                        + (f"; quarantine with `run.py db --quarantine {refused['id']}` if it "
                           "can never commit" if refused else ""), refused=refused)
        if writer and writer.get("quarantined_rows"):
            self._alert("row_quarantined", "warning", "storage",
                        f"{writer['quarantined_rows']} refused row(s) quarantined: the writer "
                        "went on without them", rows=writer["quarantined_rows"])
        if writer:
            if writer.get("spilled_rows"):
                self._alert("writer_spilling", "critical", "writer",
                            f"the writer is spilling to disk: {writer['spilled_rows']} rows in "
                            f"{writer.get('spill_path')}", rows=writer["spilled_rows"])
            if writer.get("down_since") is not None:
                down = self.clock.time() - writer["down_since"]
                self._alert("database_unreachable", "critical", "database",
                            f"the database is unreachable for {down:.0f}s: "
                            f"{writer.get('last_error') or 'no detail'}",
                            backlog=writer.get("backlog"))

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        """Raise and send alerts until cancelled; then send the stop alert (bounded)."""
        async with aiohttp.ClientSession() as http:
            self._alert("engine_started", "info", "engine", "engine started")
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._intake())
                    tg.create_task(self._checks())
                    tg.create_task(self._sender(http))
            finally:
                await self._final(http)

    async def _intake(self) -> None:
        async for event in self._sub:
            try:
                self.on_event(event)
            except Exception:  # one odd event never stops the alerts
                log.exception("alerts.bad_event", type=type(event).__name__)

    async def _checks(self) -> None:
        while True:
            await self.clock.sleep(self.settings.check_interval_seconds)
            try:
                self.check()
            except Exception:  # isolation boundary: a failed check must not end the checks
                log.exception("alerts.check_failed")

    async def _sender(self, http: aiohttp.ClientSession) -> None:
        while True:
            alert = await self._queue.get()
            self._deliver_all(http, alert)

    def _deliver_all(self, http: aiohttp.ClientSession, alert: Alert) -> None:
        for hook in self.webhooks:
            task = asyncio.create_task(self._deliver(http, hook, alert))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _deliver(self, http: aiohttp.ClientSession, hook: Webhook, alert: Alert) -> None:
        s = self.settings
        try:
            async with self._slots:
                async for attempt in AsyncRetrying(
                        sleep=self.clock.sleep, stop=stop_after_attempt(s.max_attempts),
                        wait=wait_exponential(multiplier=s.backoff_seconds, max=300),
                        retry=retry_if_exception_type(Transient), reraise=True):
                    with attempt:
                        await hook.post(http, alert, s.timeout_seconds)
            self.counts["sent"] += 1
            log.info("alert.sent", webhook=hook.label, kind=alert.kind, subject=alert.subject)
        except (Transient, Refused) as exc:
            self.counts["dropped"] += 1
            log.warning("alerts.dropped", webhook=hook.label, kind=alert.kind,
                        subject=alert.subject, error=str(exc),
                        attempts=s.max_attempts if isinstance(exc, Transient) else 1)

    async def _final(self, http: aiohttp.ClientSession) -> None:
        """Send the stop alert, and what is still queued or in flight, within the timeout."""
        self._alert("engine_stopped", "info", "engine", "engine stopped")
        while not self._queue.empty():
            self._deliver_all(http, self._queue.get_nowait())
        if self._inflight:
            _, late = await asyncio.wait(set(self._inflight), timeout=self.settings.timeout_seconds)
            for task in late:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*late, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        """Return the counts and the queue length."""
        return {**self.counts, "queued": self._queue.qsize(), "in_flight": len(self._inflight),
                "webhooks": [h.label for h in self.webhooks]}
