"""The local HTTP control API, the Prometheus endpoint and the live page, on aiohttp.web.

The server only reads state through a `ControlTarget` (the engine app) and asks it to trigger,
pause or resume; it never reaches into the engine otherwise. The live page's stream (`GET /events`,
server-sent events) is fed by one bus subscription per connected browser with policy
"drop_oldest", so a slow or stalled browser loses old events and never slows the engine.

What is accepted at all (Host, Origin, POST content type, the token, body timeout, security
headers) is decided by `engine.web.guard`; binding to anything but loopback without a token is
refused at construction. Every error is a JSON object `{"error": <kind>, "message": <text>}` with
the matching status, and every answer body (the event stream and /metrics included) is redacted
(`engine.redact`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import web

from engine import metrics, palette
from engine.bus import Bus
from engine.events import (
    AccountSnapshot,
    CycleFinished,
    DecisionMade,
    DecisionRejected,
    FeedStatus,
    Leaderboard,
    OrderFilled,
    PositionClosed,
    PositionOpened,
)
from engine.redact import redact_bytes
from engine.settings import ControlSettings, SettingsError
from engine.web.guard import Guard, JSONErrorRunner, on_prepare, request_body
from engine.web.journal import TraderJournal, add_trader_routes, gzip

log = structlog.get_logger("control")

STATIC_DIR = Path(__file__).resolve().parent / "static"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STREAM_CAPACITY = 1_000  # events queued per browser before the oldest are dropped
KEEPALIVE_SECONDS = 75.0  # an idle kept-alive connection is closed after this (aiohttp: an hour)

STREAM_TYPES: dict[str, type] = {
    t.__name__: t
    for t in (Leaderboard, AccountSnapshot, DecisionMade, DecisionRejected, OrderFilled,
              PositionOpened, PositionClosed, CycleFinished, FeedStatus)
}
# Heavy fields the page never needs stay out of the stream (they are in Postgres).
_STREAM_OMIT: dict[type, frozenset[str]] = {
    CycleFinished: frozenset({"snapshot"}),
    DecisionMade: frozenset({"raw_answer"}),
}
_JSON_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class ControlTarget(Protocol):
    """What the control API reads and commands; implemented by the engine app."""

    def status(self) -> dict[str, Any]:
        """Return engine state, paused flag, feed (connected, price_age per symbol), jobs,
        writer backlog."""
        ...

    def jobs(self) -> list[dict[str, Any]]:
        """Return per-job statistics: runs, errors, skips, success rate, last duration/error."""
        ...

    def next_run(self) -> dict[str, Any]:
        """Return the next scheduled run (time and seconds until it)."""
        ...

    async def trigger(self) -> tuple[bool, str, dict[str, Any]]:
        """Run a manual cycle through the cycle lock: (started, reason if not, summary)."""
        ...

    def pause(self) -> bool:
        """Pause scheduled jobs; return True when this changed the state."""
        ...

    def resume(self) -> bool:
        """Resume scheduled jobs; return True when this changed the state."""
        ...

    def leaderboard(self) -> dict[str, Any]:
        """Return the latest leaderboard: {"cycle_id", "ts", "rows": [...]}."""
        ...

    def trader(self, name: str) -> dict[str, Any] | None:
        """Return one trader's account, positions and last decisions, or None if unknown."""
        ...

    def traders(self) -> list[dict[str, Any]]:
        """Return every configured trader: {name, status, detail, strategy, provider, model}."""
        ...

    def symbols(self) -> dict[str, dict[str, float]]:
        """Return each symbol's tick_size and step_size."""
        ...

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Return (healthy, details) for probes."""
        ...

    def equity_history(self) -> dict[str, list[tuple[float, float]]]:
        """Return each trader's equity curve as (ts, equity) points, oldest first."""
        ...


def is_loopback(host: str) -> bool:
    """Return True when `host` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def page_url(host: str, port: int) -> str:
    """Return the page's URL on the bound host and port (a wildcard host as 127.0.0.1)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def to_json(obj: Any) -> bytes:
    """Serialize `obj` (dicts, dataclasses, uuids, numpy scalars) to JSON bytes."""
    return orjson.dumps(obj, default=str, option=_JSON_OPTS)


def event_payload(event: object) -> dict[str, Any]:
    """Return an event as the stream's JSON-able dict, with its type name under "type"."""
    omit = _STREAM_OMIT.get(type(event), frozenset())
    out: dict[str, Any] = {"type": type(event).__name__}
    for f in dataclasses.fields(event):  # type: ignore[arg-type]
        if f.name not in omit:
            out[f.name] = getattr(event, f.name)
    return out


def json_response(body: Any, status: int = 200) -> web.Response:
    """Return a JSON response, secrets redacted."""
    return web.Response(body=redact_bytes(to_json(body)), status=status,
                        content_type="application/json")


def json_error(status: int, kind: str, message: str) -> web.Response:
    """Return the JSON error body every failure uses."""
    return json_response({"error": kind, "message": message}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlServer:
    """Serves the control API, /metrics and the live page; `run()` until cancelled."""

    def __init__(self, settings: ControlSettings, target: ControlTarget, bus: Bus,
                 token: str | None) -> None:
        if not is_loopback(settings.host) and not token:
            raise SettingsError(
                f"control.host {settings.host!r} is not loopback and requires "
                "ARENA_CONTROL_TOKEN to be set (or bind control.host to 127.0.0.1)")
        self._settings = settings
        self._target = target
        self._bus = bus
        self._token = token.encode() if token else None
        self._guard = Guard(settings, token)
        self.port = settings.port
        self.started = asyncio.Event()
        self._closing: asyncio.Future[None] | None = None
        self.stream_clients = 0
        self.heartbeat_seconds = 15.0  # an SSE comment this often finds dead clients
        self.journal = TraderJournal(bus)
        self.app = self._build_app()

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve until cancelled, then close the streams and the listening socket."""
        runner = JSONErrorRunner(self.app, access_log=None, handle_signals=False,
                                 shutdown_timeout=2.0, keepalive_timeout=KEEPALIVE_SECONDS,
                                 header_timeout=self._settings.header_timeout_seconds)
        await runner.setup()
        journal = asyncio.create_task(self.journal.run(), name="control.journal")
        try:
            site = web.TCPSite(runner, self._settings.host, self._settings.port)
            await site.start()
            self.port = int(runner.addresses[0][1])
            log.info("control.started", host=self._settings.host, port=self.port,
                     url=page_url(self._settings.host, self.port), auth=self._token is not None)
            self.started.set()
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            journal.cancel()
            await runner.cleanup()
            log.info("control.stopped")

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[gzip, self._errors, self._guard.middleware],
                              # aiohttp refuses a body of client_max_size bytes; ours is allowed
                              client_max_size=self._settings.max_body_bytes + 1)
        app.on_response_prepare.append(on_prepare)
        r = app.router
        r.add_get("/", self._index)
        r.add_get("/status", self._sync(lambda: self._target.status()))
        r.add_get("/jobs", self._sync(lambda: {"jobs": self._target.jobs()}))
        r.add_get("/next-run", self._sync(lambda: self._target.next_run()))
        r.add_get("/leaderboard", self._sync(lambda: self._target.leaderboard()))
        r.add_get("/equity", self._sync(self._equity))
        r.add_get("/palette", self._sync(palette.as_json))  # the page's trader colours
        add_trader_routes(app, self._target, self.journal, json_response)
        r.add_get("/health", self._health)
        r.add_get("/metrics", self._metrics)
        r.add_get("/events", self._events)
        r.add_post("/trigger", self._trigger)
        r.add_post("/pause", self._pause)
        r.add_post("/resume", self._resume)
        r.add_get("/static/{path:.+}", self._static)
        app.on_shutdown.append(self._close_streams)
        return app

    async def _close_streams(self, _: web.Application) -> None:
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)

    # ------------------------------------------------------------ middlewares

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _http_error(exc)
        except Exception as exc:  # isolation boundary: one failing request answers 500
            log.exception("control.handler_failed", method=request.method, path=request.path)
            response = json_error(500, "internal_error", f"{type(exc).__name__}: {exc}")
        route = request.match_info.route.resource
        label = route.canonical if route is not None else "unmatched"
        metrics.CONTROL_REQUESTS.labels(route=label, method=request.method,
                                        status=str(response.status)).inc()
        log.debug("control.request", method=request.method, path=request.path,
                  status=response.status)
        return response

    # ------------------------------------------------------------ handlers

    def _sync(self, read: Callable[[], Any]) -> Handler:
        async def handler(_: web.Request) -> web.StreamResponse:
            return json_response(read())
        return handler

    def _equity(self) -> dict[str, Any]:
        history = self._target.equity_history()
        return {"traders": {name: [[ts, eq] for ts, eq in points]
                            for name, points in history.items()}}

    async def _index(self, _: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        # Checked here, not by FileResponse, so a missing file is a JSON 404 like every error.
        try:
            path = (STATIC_DIR / request.match_info["path"]).resolve()
            found = path.is_relative_to(STATIC_DIR) and path.is_file()
        except (ValueError, OSError):  # a NUL byte (`/static/%00`), a name too long
            found = False
        if not found:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def _health(self, _: web.Request) -> web.StreamResponse:
        ok, detail = self._target.health()
        return json_response({"ok": ok, **detail}, status=200 if ok else 503)

    async def _metrics(self, _: web.Request) -> web.StreamResponse:
        return web.Response(body=redact_bytes(metrics.render()),
                            headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _trigger(self, request: web.Request) -> web.StreamResponse:
        if (bad := await _reject_body(request)) is not None:
            return bad
        started, reason, summary = await self._target.trigger()
        if not started:
            return json_error(409, "conflict", reason or "a cycle is already running")
        log.info("control.triggered", summary_status=summary.get("status"))
        return json_response({"triggered": True, "summary": summary})

    async def _pause(self, request: web.Request) -> web.StreamResponse:
        return await self._set_paused(request, paused=True)

    async def _resume(self, request: web.Request) -> web.StreamResponse:
        return await self._set_paused(request, paused=False)

    async def _set_paused(self, request: web.Request, *, paused: bool) -> web.StreamResponse:
        if (bad := await _reject_body(request)) is not None:
            return bad
        changed = self._target.pause() if paused else self._target.resume()
        log.info("control.paused" if paused else "control.resumed", changed=changed)
        return json_response({"paused": paused, "changed": changed})

    # ------------------------------------------------------------ live stream

    async def _events(self, request: web.Request) -> web.StreamResponse:
        wanted = request.query.get("types")
        if wanted:
            names = [n.strip() for n in wanted.split(",") if n.strip()]
            unknown = [n for n in names if n not in STREAM_TYPES]
            if unknown:
                return json_error(400, "bad_request",
                                  f"unknown event types {unknown}; known: {sorted(STREAM_TYPES)}")
            types = [STREAM_TYPES[n] for n in names]
        else:
            types = list(STREAM_TYPES.values())
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        closing = self._closing
        sub = self._bus.subscribe(f"control.stream.{id(request)}", types,
                                  capacity=STREAM_CAPACITY, policy="drop_oldest")
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        self.stream_clients += 1
        metrics.CONTROL_STREAM_CLIENTS.inc()
        getter: asyncio.Future[list[object]] | None = None
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n: connected\n\n")
            log.info("control.stream_opened", clients=self.stream_clients)
            while not closing.done():
                getter = getter or asyncio.ensure_future(sub.get_batch(256))
                await asyncio.wait((getter, closing), timeout=self.heartbeat_seconds,
                                   return_when=asyncio.FIRST_COMPLETED)
                if closing.done() and not getter.done():
                    break
                if not getter.done():  # quiet: a dead client fails this write and is dropped
                    await response.write(b": heartbeat\n\n")
                    continue
                if getter.cancelled():
                    break
                done, getter = getter, None
                chunk = b"".join(b"data: " + to_json(event_payload(e)) + b"\n\n"
                                 for e in done.result())
                await response.write(redact_bytes(chunk))
        except ConnectionError:
            pass  # the browser went away; the next page load opens a new stream
        finally:
            if getter is not None and not getter.done():
                getter.cancel()
            sub.close()
            self.stream_clients -= 1
            metrics.CONTROL_STREAM_CLIENTS.dec()
            log.info("control.stream_closed", dropped=sub.dropped)
        return response


async def _reject_body(request: web.Request) -> web.Response | None:
    """Return a 400 response when a POST carries a body that is not a JSON object."""
    raw = request_body(request)
    if not raw.strip():
        return None
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return json_error(400, "bad_request", f"body is not valid JSON: {exc}")
    if not isinstance(parsed, dict):
        return json_error(400, "bad_request", "body must be a JSON object (or empty)")
    return None


def _http_error(exc: web.HTTPException) -> web.Response:
    kinds = {404: "not_found", 405: "method_not_allowed", 400: "bad_request",
             413: "payload_too_large"}
    if exc.status == 404:
        message = "no such endpoint; see GET / and docs/control-api.md for the API"
    elif exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        message = f"method not allowed; use {allowed}"
    else:
        message = exc.reason
    response = json_error(exc.status, kinds.get(exc.status, "http_error"), message)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response
