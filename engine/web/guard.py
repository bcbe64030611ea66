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
or wrong token answers 401. A POST body must arrive within `control.body_timeout_seconds` (408);
one larger than `control.max_body_bytes` answers 413 naming the limit (exactly that many bytes is
accepted), and a gzip or deflate body is inflated here, never past that limit (413 beyond it).
A connection whose request line and headers are not complete within
`control.header_timeout_seconds` is answered 408 and closed.

Every answer carries `X-Content-Type-Options: nosniff`, `Content-Security-Policy: default-src
'self'; frame-ancestors 'none'; ...` and `Referrer-Policy: no-referrer`, errors from the HTTP
parser (over-long URL or header lines, malformed requests) included, which are JSON as well.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import zlib
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
_BODY = "arena.body"  # the request key holding the body the guard read

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
    if not port:
        return name, None
    # ASCII digits only: int() would also take "+8080", " 8080" and full-width digits.
    return name, int(port) if port.isascii() and port.isdigit() else -1


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
        if request.method == "POST" and (bad := await self._read_body(request)) is not None:
            return bad
        return await handler(request)

    async def _read_body(self, request: web.Request) -> web.Response | None:
        """Read the POST body within the timeout and the size limit, inflate a gzip or deflate
        one (never past the limit), and keep it for the handler (`request_body`)."""
        s = self._settings
        try:
            async with asyncio.timeout(s.body_timeout_seconds):
                raw = await request.read()
        except TimeoutError:
            log.warning("control.body_timeout", path=request.path, remote=request.remote)
            return refuse(408, "request_timeout",
                          f"request body not received within {s.body_timeout_seconds:g} s",
                          Connection="close")
        except web.HTTPRequestEntityTooLarge:
            return self._too_large(request, "")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            request[_BODY] = raw
            return None
        if encoding not in ("gzip", "x-gzip", "deflate"):
            return refuse(415, "unsupported_media_type",
                          f"Content-Encoding {encoding!r} is not accepted (gzip, deflate or none)")
        try:
            request[_BODY] = inflate(raw, encoding, s.max_body_bytes)
        except BodyTooLarge:
            return self._too_large(request, "inflated ")
        except zlib.error as exc:
            return refuse(400, "bad_request", f"the {encoding} body cannot be inflated: {exc}")
        return None

    def _too_large(self, request: web.Request, what: str) -> web.Response:
        limit = self._settings.max_body_bytes
        log.warning("control.body_too_large", path=request.path, remote=request.remote,
                    limit=limit, inflated=bool(what))
        return refuse(413, "payload_too_large",
                      f"the {what}request body is larger than {limit} bytes "
                      "(control.max_body_bytes)", Connection="close")

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


class BodyTooLarge(ValueError):
    """A compressed body that inflates past the limit."""


def inflate(data: bytes, encoding: str, limit: int) -> bytes:
    """Return a gzip or deflate body inflated; raise BodyTooLarge as soon as it would pass
    `limit` bytes (never inflating more than `limit` + 1), zlib.error when it is not valid."""
    if encoding == "deflate":  # zlib-wrapped as the RFC says, or raw deflate as some send it
        wbits = zlib.MAX_WBITS if data[:1] and data[0] & 0x0F == 8 else -zlib.MAX_WBITS
    else:
        wbits = 16 + zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(limit)
    if not inflater.eof or inflater.unused_data:
        raise zlib.error("truncated stream or data after its end")
    return out


def request_body(request: web.Request) -> bytes:
    """Return the POST body the guard read (inflated when it came compressed)."""
    body: bytes = request[_BODY]
    return body


class _JSONErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering HTTP-level errors in JSON like every other, and
    dropping a connection whose request head (line and headers) is not complete within
    `header_timeout` seconds of its first byte (or of the connection, for the first request)."""

    __slots__ = ("_head_timer", "header_timeout")

    def __init__(self, manager: Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:  # a request's head is complete
            self._disarm_head_timer()
        elif (self._head_timer is None and not self._request_in_progress
              and not self._messages):  # the next request's head begins on a kept connection
            self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or self._request_in_progress or self._messages:
            return
        log.warning("control.header_timeout", remote=str(self.peername),
                    timeout_s=self.header_timeout)
        body = error_body("request_timeout", f"request headers not received within "
                                             f"{self.header_timeout:g} s")
        head = "".join(f"{k}: {v}\r\n" for k, v in SECURITY_HEADERS.items())
        transport.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(body)}\r\nConnection: close\r\n{head}\r\n"
                        .encode() + body)
        self.force_close()
        transport.close()

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
    header_timeout = 10.0  # set by JSONErrorRunner

    def __call__(self) -> RequestHandler:
        return _JSONErrorHandler(self, loop=self._loop, header_timeout=self.header_timeout,
                                 **self._kwargs)


class JSONErrorRunner(web.AppRunner):
    """An AppRunner whose connections answer parser errors (e.g. an over-long URL) in JSON and
    time out slow request heads; request bodies reach the app as sent (the guard inflates a
    compressed one itself, within `control.max_body_bytes`)."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, auto_decompress=False, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _JSONErrorServer  # same state, one method more specific
        server.header_timeout = self._header_timeout  # type: ignore[attr-defined]
        return server
