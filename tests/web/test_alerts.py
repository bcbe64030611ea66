"""Alerts against a local HTTP server on 127.0.0.1: formats, dedup, rate limit, slow and failing."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from engine import logging as arena_logging
from engine.app.build import build_alerts
from engine.bus import Bus
from engine.clock import SimClock
from engine.events import FeedStatus, JobRun, OrderFilled, TraderCooldown
from engine.output_settings import AlertSettings, WebhookSettings
from engine.web.alerts import Alerts
from engine.web.webhooks import Alert

TOKEN = "123456:telegram-secret-token"


class Hooks:
    """A local webhook server: records every request; /slow never answers in time, /fail 500s."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.flaky_failures = 2
        self._changed = asyncio.Condition()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.path, body))
        async with self._changed:
            self._changed.notify_all()
        if request.path == "/slow":
            await asyncio.sleep(30)  # the server being slow; the alerts time out long before
        if request.path == "/fail":
            return web.Response(status=500, text="internal error")
        if request.path.startswith("/gone"):
            return web.Response(status=404, text="no such hook")
        if request.path == "/flaky" and self.flaky_failures > 0:
            self.flaky_failures -= 1
            return web.Response(status=503, text="try later")
        return web.json_response({"ok": True})

    def on(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.requests if p == path]

    async def wait(self, cond: Callable[[], bool], what: str, clock: SimClock | None = None,
                   step: float = 0.5) -> None:
        """Wait (bounded) until `cond`, moving simulated time on when a clock is given."""
        for _ in range(200):
            if cond():
                return
            if clock is not None:
                await clock.advance(step)
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.05)
                except TimeoutError:
                    pass
        raise AssertionError(f"timed out waiting for: {what}; got {self.requests}")


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    server = Hooks()
    app = web.Application()
    app.router.add_post("/{tail:.*}", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def settings(*hooks: WebhookSettings, **kw: Any) -> AlertSettings:
    values: dict[str, Any] = {"timeout_seconds": 0.3, "max_attempts": 3, "backoff_seconds": 1.0,
                              "check_interval_seconds": 10.0, "webhooks": hooks}
    values.update(kw)
    return AlertSettings(**values)


def hook(fmt: str, env: str, **kw: Any) -> WebhookSettings:
    return WebhookSettings(format=fmt, url_env=env, **kw)  # type: ignore[arg-type]


def job_failed(job: str = "trading_cycle", ts: float = 1_767_225_600.0) -> JobRun:
    return JobRun(job=job, trigger="schedule", started_at=ts, finished_at=ts + 1,
                  status="timeout", error="cancelled after 240s")


async def started(alerts: Alerts) -> asyncio.Task[None]:
    task = asyncio.create_task(alerts.run())
    await asyncio.sleep(0)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait({task})


async def test_each_format_gets_its_own_body_and_the_telegram_token_goes_in_the_path(
        hooks: Hooks, bus: Bus, clock: SimClock) -> None:
    env = {"H_JSON": f"{hooks.url}/json", "H_SLACK": f"{hooks.url}/slack",
           "H_DISCORD": f"{hooks.url}/discord", "H_TG": TOKEN}
    alerts = Alerts(settings(hook("json", "H_JSON"), hook("slack", "H_SLACK"),
                             hook("discord", "H_DISCORD"),
                             hook("telegram", "H_TG", chat_id="-100", telegram_api_url=hooks.url)),
                    bus, clock, env)
    task = await started(alerts)
    await hooks.wait(lambda: len(hooks.requests) == 4, "the start alert on every webhook")
    bus.publish(job_failed())
    await hooks.wait(lambda: len(hooks.requests) == 8, "the job alert on every webhook")
    await stop(task)
    generic = hooks.on("/json")[1]
    assert generic["kind"] == "job_failed" and generic["level"] == "warning"
    assert generic["subject"] == "trading_cycle" and generic["source"] == "arena"
    assert generic["text"] == "job trading_cycle timeout: cancelled after 240s"
    assert generic["fields"] == {"status": "timeout", "error": "cancelled after 240s"}
    assert "job trading_cycle timeout" in hooks.on("/slack")[1]["text"]
    assert "job trading_cycle timeout" in hooks.on("/discord")[1]["content"]
    telegram = hooks.on(f"/bot{TOKEN}/sendMessage")
    assert telegram[1]["chat_id"] == "-100" and "WARNING" in telegram[1]["text"]
    assert [b["kind"] for b in hooks.on("/json")] == ["engine_started", "job_failed",
                                                       "engine_stopped"]


async def test_the_same_alert_is_sent_once_per_dedup_window(hooks: Hooks, bus: Bus,
                                                            clock: SimClock) -> None:
    alerts = Alerts(settings(hook("json", "H"), dedup_seconds=600, min_level="warning"),
                    bus, clock, {"H": f"{hooks.url}/json"})
    task = await started(alerts)
    for _ in range(3):
        bus.publish(job_failed())
    bus.publish(job_failed("account_sync"))  # another subject: its own alert
    await hooks.wait(lambda: len(hooks.requests) == 2, "two alerts")
    await clock.advance(601)
    bus.publish(job_failed())
    await hooks.wait(lambda: len(hooks.requests) == 3, "the same alert after the window")
    await stop(task)
    assert [b["subject"] for b in hooks.on("/json")] == ["trading_cycle", "account_sync",
                                                         "trading_cycle"]
    assert alerts.counts["duplicates"] == 2 and alerts.counts["below_level"] == 2  # start, stop


async def test_alerts_over_the_rate_limit_are_dropped_and_logged(hooks: Hooks, bus: Bus,
                                                                 clock: SimClock) -> None:
    alerts = Alerts(settings(hook("json", "H"), rate_limit_per_minute=2, min_level="warning"),
                    bus, clock, {"H": f"{hooks.url}/json"})
    with capture_logs() as logs:
        for name in ("a", "b", "c", "d"):
            alerts.raise_alert(Alert("job_failed", "warning", name, "x", clock.time()))
        await clock.advance(60)
        alerts.raise_alert(Alert("job_failed", "warning", "e", "x", clock.time()))
    assert alerts.counts["rate_limited"] == 2
    assert [e["subject"] for e in logs if e["event"] == "alerts.rate_limited"] == ["c", "d"]
    assert alerts.status()["queued"] == 3  # a, b, then e in the next minute


async def test_a_slow_webhook_is_retried_then_dropped_without_holding_up_the_others(
        hooks: Hooks, bus: Bus, clock: SimClock) -> None:
    alerts = Alerts(settings(hook("json", "SLOW"), hook("json", "FAST"), min_level="warning"),
                    bus, clock, {"SLOW": f"{hooks.url}/slow", "FAST": f"{hooks.url}/json"})
    task = await started(alerts)
    with capture_logs() as logs:
        bus.publish(job_failed())
        bus.publish(job_failed("health_check"))
        await hooks.wait(lambda: len(hooks.on("/json")) == 2, "the fast webhook's two alerts")
        assert len(hooks.on("/slow")) <= 2  # the slow one is still on its first attempts
        await hooks.wait(lambda: alerts.counts["dropped"] == 2, "the slow webhook given up",
                         clock)
    await stop(task)
    assert len(hooks.on("/slow")) == 6  # 3 attempts per alert
    dropped = [e for e in logs if e["event"] == "alerts.dropped"]
    assert {e["webhook"] for e in dropped} == {"json:SLOW"}
    assert all(e["error"].startswith("TimeoutError") and e["attempts"] == 3 for e in dropped)


async def test_a_500_is_retried_with_back_off_then_dropped_and_a_404_at_once(
        hooks: Hooks, bus: Bus, clock: SimClock) -> None:
    alerts = Alerts(settings(hook("json", "FAIL"), hook("json", "GONE"), min_level="warning",
                             max_attempts=4, backoff_seconds=2.0),
                    bus, clock, {"FAIL": f"{hooks.url}/fail", "GONE": f"{hooks.url}/gone"})
    task = await started(alerts)
    t0 = clock.time()
    with capture_logs() as logs:
        bus.publish(job_failed())
        await hooks.wait(lambda: len(hooks.on("/fail")) == 1, "first attempt")
        assert clock.time() == t0  # no back-off before the first try
        await hooks.wait(lambda: alerts.counts["dropped"] == 2, "both given up", clock, 1.0)
    await stop(task)
    assert len(hooks.on("/fail")) == 4 and len(hooks.on("/gone")) == 1
    assert clock.time() - t0 >= 2 + 4 + 8  # exponential back-off on the engine clock
    errors = {e["webhook"]: e for e in logs if e["event"] == "alerts.dropped"}
    assert errors["json:FAIL"]["error"] == "http 500: internal error"
    assert errors["json:FAIL"]["attempts"] == 4
    assert errors["json:GONE"]["error"] == "http 404: no such hook"
    assert errors["json:GONE"]["attempts"] == 1


async def test_a_webhook_that_recovers_gets_the_alert(hooks: Hooks, bus: Bus,
                                                      clock: SimClock) -> None:
    alerts = Alerts(settings(hook("json", "H"), min_level="warning"), bus, clock,
                    {"H": f"{hooks.url}/flaky"})
    task = await started(alerts)
    bus.publish(job_failed())
    await hooks.wait(lambda: alerts.counts["sent"] == 1, "sent on the third try", clock)
    await stop(task)
    assert len(hooks.on("/flaky")) == 3 and alerts.counts["dropped"] == 0


async def test_events_and_checks_raise_the_alerts_the_issue_lists(bus: Bus,
                                                                  clock: SimClock) -> None:
    state: dict[str, Any] = {"price_age": {"BTCUSDT": 3.0, "ETHUSDT": 500.0},
                             "writer": {"spilled_rows": 0, "down_since": None}}
    alerts = Alerts(settings(stale_symbol_seconds=120, drawdown_pct=20), bus, clock, {},
                    probe=lambda: state)
    raised: list[Alert] = []
    alerts.raise_alert = lambda a: raised.append(a) or True  # type: ignore[method-assign]
    alerts.on_event(TraderCooldown("claude", 3, clock.time() + 1800, "http 529", clock.time()))
    alerts.on_event(FeedStatus("disconnected", clock.time(), "connection closed"))
    alerts.on_event(OrderFilled(trader="gpt", symbol="SOLUSDT", side="sell", qty=10.0,
                                price=90.0, notional=900.0, fee=0.5, realized_pnl=-250.0,
                                reason="liquidation", cycle_id=None, ref_price=None,
                                ts=clock.time()))
    alerts.check()
    state["writer"] = {"spilled_rows": 1200, "spill_path": "data/spill.jsonl",
                       "down_since": clock.time() - 90, "last_error": "connection refused"}
    alerts.check()
    assert [(a.kind, a.level, a.subject) for a in raised] == [
        ("trader_cooldown", "warning", "claude"),
        ("feed_disconnected", "warning", "feed"),
        ("liquidation", "critical", raised[2].subject),
        ("symbol_stale", "warning", "ETHUSDT"),
        ("symbol_stale", "warning", "ETHUSDT"),
        ("writer_spilling", "critical", "writer"),
        ("database_unreachable", "critical", "database"),
    ]
    assert raised[2].text == "gpt was liquidated on SOLUSDT: 10 at 90 (realized -250.00 USDT)"
    assert raised[6].text == "the database is unreachable for 90s: connection refused"


async def test_a_drawdown_over_the_setting_raises_an_alert(bus: Bus, clock: SimClock) -> None:
    from tests.support.store import snapshot

    alerts = Alerts(settings(drawdown_pct=20), bus, clock, {})
    raised: list[Alert] = []
    alerts.raise_alert = lambda a: raised.append(a) or True  # type: ignore[method-assign]
    calm, deep = snapshot("claude", 9_000.0, clock.time()), snapshot("claude", 7_000.0,
                                                                     clock.time())
    alerts.on_event(calm.__class__(**{**_fields(calm), "drawdown_pct": 10.0}))
    alerts.on_event(deep.__class__(**{**_fields(deep), "drawdown_pct": 30.0}))
    assert [(a.kind, a.subject) for a in raised] == [("drawdown", "claude")]
    assert raised[0].text.startswith("claude is 30.0% below its peak equity")


async def test_an_echoed_key_in_a_cooldown_alert_reaches_no_webhook_body(
        hooks: Hooks, bus: Bus, clock: SimClock) -> None:
    key, registered = "sk-proj-EchoedBack0123456789abcdefXYZ", "registered-secret-42"
    arena_logging.register_secrets([registered])
    try:
        env = {"H_JSON": f"{hooks.url}/json", "H_SLACK": f"{hooks.url}/slack",
               "H_DISCORD": f"{hooks.url}/discord", "H_TG": TOKEN}
        alerts = Alerts(settings(hook("json", "H_JSON"), hook("slack", "H_SLACK"),
                                 hook("discord", "H_DISCORD"),
                                 hook("telegram", "H_TG", chat_id="-100",
                                      telegram_api_url=hooks.url)), bus, clock, env)
        task = await started(alerts)
        await hooks.wait(lambda: len(hooks.requests) == 4, "the start alert on every webhook")
        # As if the error had escaped the redaction where it is made: the bodies still hold none.
        bus.publish(TraderCooldown(trader="gpt", failures=3, until=clock.time() + 60,
                                   last_error=f"http 401: Incorrect API key provided: {key} "
                                              f"({registered}) Bearer abcdefgh12345",
                                   ts=clock.time()))
        await hooks.wait(lambda: len(hooks.requests) == 8, "the cooldown alert everywhere")
        await stop(task)
    finally:
        arena_logging.clear_secrets()
    bodies = [json.dumps(body) for path, body in hooks.requests]
    assert not [b for b in bodies if key in b or registered in b or "abcdefgh12345" in b]
    cooldown = [b for b in bodies if "cooling down" in b]
    assert len(cooldown) == 4
    assert all("Incorrect API key provided: *** (***) Bearer ***" in b for b in cooldown)


def _fields(event: Any) -> dict[str, Any]:
    return {k: getattr(event, k) for k in event.__slots__}


async def test_urls_and_tokens_never_reach_the_logs(hooks: Hooks, bus: Bus,
                                                    clock: SimClock) -> None:
    out = io.StringIO()
    arena_logging.configure("debug", "json", stream=out)
    try:
        env = {"H_TG": TOKEN, "H_FAIL": f"{hooks.url}/fail?key=hook-secret-value"}
        alerts = Alerts(settings(hook("telegram", "H_TG", chat_id="1",
                                      telegram_api_url=f"{hooks.url}/gone"),
                                 hook("json", "H_FAIL"), max_attempts=1), bus, clock, env)
        task = await started(alerts)
        await hooks.wait(lambda: alerts.counts["dropped"] == 2, "both dropped")
        await stop(task)
    finally:
        arena_logging.clear_secrets()
    text = out.getvalue()
    lines = [json.loads(x) for x in text.splitlines()]
    assert {x["webhook"] for x in lines if x["event"] == "alerts.dropped"} == {
        "telegram:H_TG", "json:H_FAIL"}
    assert TOKEN not in text and "hook-secret-value" not in text


def test_no_alerts_or_no_webhook_builds_nothing(bus: Bus, clock: SimClock) -> None:
    s = SimpleNamespace(alerts=settings(hook("json", "H")))
    on = SimpleNamespace(settings=s, options=SimpleNamespace(no_alerts=False), bus=bus,
                         clock=clock, feed=None, writer=None)
    assert isinstance(build_alerts(on), Alerts)
    off = SimpleNamespace(**{**vars(on), "options": SimpleNamespace(no_alerts=True)})
    assert build_alerts(off) is None
    bare = SimpleNamespace(**{**vars(on), "settings": SimpleNamespace(alerts=settings())})
    assert build_alerts(bare) is None


async def test_raising_never_waits_even_when_the_queue_is_full(bus: Bus,
                                                               clock: SimClock) -> None:
    alerts = Alerts(settings(hook("json", "H"), queue_size=2, rate_limit_per_minute=100),
                    bus, clock, {"H": "http://127.0.0.1:9/never"})
    results = [alerts.raise_alert(Alert("job_failed", "warning", str(i), "x", clock.time()))
               for i in range(5)]
    assert results == [True, True, False, False, False]
    assert alerts.counts["queue_full"] == 3


ENGINE_ALERTS = """
[alerts]
drawdown_pct = 0.25
dedup_seconds = 86400
[[alerts.webhooks]]
format = "json"
url_env = "ARENA_TEST_WEBHOOK"
"""


async def _replay_with_webhook(database_url: str, tmp_path: Any, hooks: Hooks,
                               *args: str) -> int:
    import os
    import sys

    from tests.support.live_engine import BUY_AND_HOLD, EMA_CROSS, ROOT, SAMPLE

    settings = tmp_path / "settings.toml"
    settings.write_text(f'[database]\nspill_path = "{tmp_path}/spill.jsonl"\nflush_ms = 50\n'
                        f'[control]\nenabled = false\n[report]\non_exit = false\n'
                        f'{ENGINE_ALERTS}[[jobs]]\nname = "trading_cycle"\n'
                        'run = "trading_cycle"\nschedule = "interval"\ninterval_seconds = 60\n'
                        + BUY_AND_HOLD + EMA_CROSS)
    env = {**os.environ, "DATABASE_URL": database_url,
           "ARENA_TEST_WEBHOOK": f"{hooks.url}/engine"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "--config", str(settings), "--replay",
        str(SAMPLE), "--fresh", "--log-format", "json", *args, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return await asyncio.wait_for(proc.wait(), 120)


async def test_a_replaying_engine_sends_start_drawdown_and_stop_alerts(
        hooks: Hooks, database_url: str, tmp_path: Any) -> None:
    assert await _replay_with_webhook(database_url, tmp_path, hooks) == 0
    kinds = [b["kind"] for b in hooks.on("/engine")]
    assert kinds[0] == "engine_started" and kinds[-1] == "engine_stopped"
    drawdowns = [b for b in hooks.on("/engine") if b["kind"] == "drawdown"]
    assert {b["subject"] for b in drawdowns} == {"ema_cross", "buy_and_hold"}  # once each
    # (settings.toml's filters apply: ema_cross's deepest drawdown on the sample is 0.34 %)
    assert len(drawdowns) == 2 and all(b["fields"]["drawdown_pct"] > 0.25 for b in drawdowns)


async def test_no_alerts_sends_nothing(hooks: Hooks, database_url: str, tmp_path: Any) -> None:
    assert await _replay_with_webhook(database_url, tmp_path, hooks, "--no-alerts") == 0
    assert hooks.requests == []


async def test_a_storage_halt_and_a_quarantine_raise_alerts(bus: Bus, clock: SimClock) -> None:
    refused = {"table": "fills", "id": "0190abcd", "error": "CheckViolationError [23514]: no"}
    state: dict[str, Any] = {"price_age": {}, "writer": {
        "spilled_rows": 0, "down_since": None, "refused": refused, "quarantined_rows": 1,
        "halted": "halted: storage (row 0190abcd refused by fills: CheckViolationError)"}}
    alerts = Alerts(settings(), bus, clock, {}, probe=lambda: state)
    raised: list[Alert] = []
    alerts.raise_alert = lambda a: raised.append(a) or True  # type: ignore[method-assign]
    alerts.check()
    assert [(a.kind, a.level, a.subject) for a in raised] == [
        ("trading_halted", "critical", "storage"), ("row_quarantined", "warning", "storage")]
    assert raised[0].text == (
        "trading storage (row 0190abcd refused by fills: CheckViolationError); quarantine with "
        "`run.py db --quarantine 0190abcd` if it can never commit")
