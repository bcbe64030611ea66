"""What the control API accepts: only same-origin requests to the address it is bound to.

A web page in the browser of the engine's user must not be able to command it (cross-site request
forgery) or read it through a name that resolves to 127.0.0.1 (DNS rebinding). The guard, one
aiohttp middleware, refuses with `403 {"error": "forbidden", ...}`:

- a `Host` header that is neither the bound address (with the bound port) nor a name in
  `control.allowed_hosts` (with the bound port); on a wildcard bind (0.0.0.0, ::), IP literals;
- an `Origin` header, when present, other than `http://<the request's Host>`, and any request a
  browser marks `Sec-Fetch-Site: cross-site` but a top-level navigation (a link to the page);
- a POST whose `Content-Type` is not `application/json` (an HTML form cannot send that type, and
  a cross-site `fetch` cannot without a CORS preflight, which is never answered).

Then the token: with `ARENA_CONTROL_TOKEN` set, a POST needs `Authorization: Bearer <token>`; with
`control.protect_reads`, so does every read but `/`, `/static/...` and `/health` (the token may
also come as the `arena_token` cookie, which the live page sets for its event stream). A missing
or wrong token answers 401. A POST body must arrive within `control.body_timeout_seconds` (408).

Every answer carries `X-Content-Type-Options: nosniff`, `Content-Security-Policy: default-src
'self'; frame-ancestors 'none'; ...` and `Referrer-Policy: no-referrer`, errors from the HTTP
parser (over-long URL or header lines, malformed requests) included, which are JSON as well.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import orjson
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from engine.settings import ControlSettings

log = structlog.get_logger("control")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": ("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                "form-action 'none'; object-src 'none'"),
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
OPEN_READS = ("/", "/health")  # and /static/...: what a probe or the page's first load needs
TOKEN_COOKIE = "arena_token"
_WILDCARDS = {"0.0.0.0", "::", ""}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(kind: str, message: str) -> bytes:
    """Return the JSON error body every refusal uses."""
    return orjson.dumps({"error": kind, "message": message})


def refuse(status: int, kind: str, message: str, **headers: str) -> web.Response:
    """Return a JSON refusal."""
    return web.Response(body=error_body(kind, message), status=status,
                        content_type="application/json", headers=headers or None)


def add_security_headers(response: web.StreamResponse) -> None:
    """Set the headers every answer carries (before it is sent)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


async def on_prepare(_: web.Request, response: web.StreamResponse) -> None:
    """aiohttp's on_response_prepare hook: security headers on every answer, files included."""
    add_security_headers(response)


def _split_host(value: str) -> tuple[str, int | None]:
    """Split a Host header into (lower-case name, port or None); IPv6 keeps its brackets off."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    try:
        return name, int(port) if port else None
    except ValueError:
        return name, -1


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """The middleware that decides what the control API answers at all."""

    def __init__(self, settings: ControlSettings, token: str | None) -> None:
        self._settings = settings
        self._token = token.encode() if token else None
        bound = settings.host.strip("[]").lower()
        self._names = {bound, *(h.lower() for h in settings.allowed_hosts)}
        self._wildcard = bound in _WILDCARDS

    def host_allowed(self, header: str | None, local_port: int) -> bool:
        """Tell whether a Host header names this server (address or allowed name, and the port
        the connection came in on)."""
        if not header:
            return False
        name, port = _split_host(header)
        if (port or 80) != local_port:
            return False
        return name in self._names or (self._wildcard and _is_ip(name))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            log.warning("control.refused", method=request.method, path=request.path,
                        reason=refusal, host=request.headers.get("Host"),
                        origin=request.headers.get("Origin"), remote=request.remote)
            return refuse(403, "forbidden", refusal)
        if (denied := self._auth(request)) is not None:
            return denied
        if request.method == "POST":
            try:
                async with asyncio.timeout(self._settings.body_timeout_seconds):
                    await request.read()  # cached: the handler reads it again at no cost
            except TimeoutError:
                log.warning("control.body_timeout", path=request.path, remote=request.remote)
                return refuse(408, "request_timeout",
                              f"request body not received within "
                              f"{self._settings.body_timeout_seconds:g} s", Connection="close")
        return await handler(request)

    def _refusal(self, request: web.Request) -> str | None:
        host = request.headers.get("Host")
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not self.host_allowed(host, int(sockname[1]) if sockname else -1):
            return (f"Host {host!r} is not this server; use the bound address and port, or add "
                    "the name to control.allowed_hosts")
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{host}".lower():
            return f"cross-origin request from {origin!r} refused"
        navigation = (request.method == "GET"
                      and request.headers.get("Sec-Fetch-Mode", "").lower() == "navigate")
        if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site" and not navigation:
            return "cross-site request refused"  # a link from another site may still open a page
        if request.method == "POST" and request.content_type != "application/json":
            return ("a POST must carry 'Content-Type: application/json' "
                    f"(got {request.headers.get('Content-Type')!r})")
        return None

    def _auth(self, request: web.Request) -> web.Response | None:
        if self._token is None:
            return None
        if request.method != "POST":
            path = request.path
            if (not self._settings.protect_reads or path in OPEN_READS
                    or path.startswith("/static/")):
                return None
        supplied = request.headers.get("Authorization", "")
        scheme, _, value = supplied.partition(" ")
        given = value.strip() if scheme.lower() == "bearer" else ""
        if not given and request.method != "POST":
            given = unquote(request.cookies.get(TOKEN_COOKIE, ""))
        if given and hmac.compare_digest(given.encode(), self._token):
            return None
        reason = "wrong" if given or supplied else "missing"
        log.warning("control.auth_refused", path=request.path, reason=reason,
                    remote=request.remote)
        return refuse(401, "unauthorized",
                      f"{reason} bearer token; send 'Authorization: Bearer "
                      "<ARENA_CONTROL_TOKEN>'", **{"WWW-Authenticate": 'Bearer realm="arena"'})


class _JSONErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering HTTP-level errors in JSON like every other."""

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if already answering
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        kind = "bad_request" if status == 400 else "internal_error" if status >= 500 else "error"
        detail = f"{phrase}: {message}" if status < 500 and message else phrase
        response = web.Response(status=status, body=error_body(kind, detail),
                                content_type="application/json")
        add_security_headers(response)
        response.force_close()
        return response


class _JSONErrorServer(Server):
    def __call__(self) -> RequestHandler:
        return _JSONErrorHandler(self, loop=self._loop, **self._kwargs)


class JSONErrorRunner(web.AppRunner):
    """An AppRunner whose connections answer parser errors (e.g. an over-long URL) in JSON."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _JSONErrorServer  # same state, one method more specific
        return server
