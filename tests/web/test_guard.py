"""What the control API refuses: foreign Host, cross-origin requests, form-like POSTs, slow bodies,
reads without the token when protected; the security headers and JSON errors on every answer."""

from __future__ import annotations

import asyncio
import gzip
import io
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from engine import logging as arena_logging
from engine.bus import Bus
from engine.settings import ControlSettings
from engine.web.control import ControlServer
from engine.web.guard import SECURITY_HEADERS, BodyTooLarge, Guard, inflate
from tests.support.control import FakeTarget

TOKEN = "guard-token-0123456789"
JSON = {"Content-Type": "application/json"}


class Served:
    def __init__(self, server: ControlServer, target: FakeTarget) -> None:
        self.server, self.target = server, target
        self.base = f"http://127.0.0.1:{server.port}"

    async def call(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                   data: Any = None) -> tuple[int, dict[str, str], Any]:
        async with aiohttp.ClientSession() as s, s.request(
                method, self.base + path, headers=headers, data=data) as resp:
            body = await resp.read()
            is_json = resp.content_type == "application/json"
            return resp.status, dict(resp.headers), (await resp.json() if is_json else body)


async def serve(bus: Bus, token: str | None = None, **settings: Any) -> AsyncIterator[Served]:
    target = FakeTarget()
    server = ControlServer(ControlSettings(port=0, **settings), target, bus, token)
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.started.wait(), 10)
    try:
        yield Served(server, target)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def api(bus: Bus) -> AsyncIterator[Served]:
    async for served in serve(bus, body_timeout_seconds=0.3):
        yield served


@pytest.fixture
async def protected(bus: Bus) -> AsyncIterator[Served]:
    async for served in serve(bus, TOKEN, protect_reads=True):
        yield served


def assert_secure(headers: dict[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, name
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


# ---------------------------------------------------------------- Host (DNS rebinding)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1",
                                  "localhost:1", "127.0.0.1.nip.io:{port}", ""])
async def test_a_foreign_host_header_is_403_json(api: Served, host: str) -> None:
    status, headers, body = await api.call(
        "GET", "/status", headers={"Host": host.format(port=api.server.port)})
    assert status == 403
    assert body["error"] == "forbidden" and "control.allowed_hosts" in body["message"]
    assert_secure(headers)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"])
async def test_the_bound_address_and_allowed_names_are_served(api: Served, host: str) -> None:
    status, _, _ = await api.call("GET", "/status",
                                  headers={"Host": host.format(port=api.server.port)})
    assert status == 200


async def test_allowed_hosts_adds_names(bus: Bus) -> None:
    async for served in serve(bus, allowed_hosts=("arena.lan",)):
        port = served.server.port
        assert (await served.call("GET", "/status", headers={"Host": f"arena.lan:{port}"}))[0] \
            == 200
        assert (await served.call("GET", "/status", headers={"Host": f"localhost:{port}"}))[0] \
            == 403


# ---------------------------------------------------------------- cross-site POSTs


async def test_a_post_from_another_origin_is_refused_and_logged(api: Served) -> None:
    with capture_logs() as logs:
        status, _, body = await api.call("POST", "/trigger", data=b"{}", headers={
            **JSON, "Origin": "http://127.0.0.1:9999"})
    assert status == 403 and "cross-origin" in body["message"]
    assert api.target.triggers == 0
    [refused] = [e for e in logs if e["event"] == "control.refused"]
    assert refused["origin"] == "http://127.0.0.1:9999" and refused["log_level"] == "warning"


async def test_a_post_from_the_servers_own_origin_is_accepted(api: Served) -> None:
    status, _, body = await api.call("POST", "/pause", data=b"{}", headers={
        **JSON, "Origin": api.base})
    assert (status, body["paused"]) == (200, True)


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "text/plain"])
async def test_a_post_a_form_could_send_is_refused(api: Served, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, body = await api.call("POST", "/pause", headers=headers, data=b"")
    assert status == 403 and "application/json" in body["message"]
    assert api.target.paused is False


async def test_a_request_the_browser_marks_cross_site_is_refused(api: Served) -> None:
    status, _, _ = await api.call("GET", "/status", headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403


async def test_a_link_from_another_site_still_opens_the_page(api: Served) -> None:
    status, _, _ = await api.call("GET", "/", headers={"Sec-Fetch-Site": "cross-site",
                                                       "Sec-Fetch-Mode": "navigate"})
    assert status == 200


# ---------------------------------------------------------------- bodies and parser errors


async def test_a_body_that_never_arrives_is_answered_408_within_the_timeout(api: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.server.port)
    writer.write(f"POST /pause HTTP/1.1\r\nHost: 127.0.0.1:{api.server.port}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 999\r\n\r\n{}".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert b'"error":"request_timeout"' in head
    assert api.target.paused is False


async def test_a_body_over_max_body_bytes_is_413_json(api: Served) -> None:
    status, headers, body = await api.call("POST", "/pause", headers=JSON,
                                           data=b"{" + b" " * 70_000 + b"}")
    assert status == 413 and body["error"] == "payload_too_large"
    assert_secure(headers)


@pytest.mark.parametrize("request_head", [
    "GET /{long} HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /status HTTP/1.1\r\nHost: h\r\nX-Long: {long}\r\n\r\n",
    "NOT HTTP AT ALL\r\n\r\n",
])
async def test_parser_errors_are_json_with_the_security_headers(api: Served,
                                                                request_head: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.server.port)
    writer.write(request_head.format(long="a" * 10_000).encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert b"Content-Type: application/json" in head
    assert b"X-Content-Type-Options: nosniff" in head
    assert body.startswith(b'{"error":"bad_request","message":"Bad Request')


# ---------------------------------------------------------------- every answer


@pytest.mark.parametrize("path", ["/", "/status", "/static/app.js", "/metrics", "/nope",
                                  "/static/", "/static/nope.js", "/health"])
async def test_every_answer_carries_the_security_headers(api: Served, path: str) -> None:
    _, headers, _ = await api.call("GET", path)
    assert_secure(headers)


@pytest.mark.parametrize("path", ["/static/", "/static/nope.js", "/static/../settings.toml"])
async def test_missing_static_files_and_the_static_directory_are_404_json(api: Served,
                                                                          path: str) -> None:
    status, _, body = await api.call("GET", path)
    assert status == 404 and body["error"] == "not_found"


async def test_the_event_stream_carries_the_security_headers(api: Served) -> None:
    async with aiohttp.ClientSession() as s, s.get(api.base + "/events") as resp:
        assert resp.status == 200
        assert_secure(dict(resp.headers))


async def test_a_500_answer_never_holds_a_secret(api: Served) -> None:
    secret = "sk-ant-api03-LeakedInA500"
    arena_logging.register_secrets([secret])

    def broken() -> dict:
        raise RuntimeError(f"provider refused key {secret}")

    api.target.status = broken  # type: ignore[method-assign]
    try:
        status, _, body = await api.call("GET", "/status")
    finally:
        arena_logging.clear_secrets()
    assert status == 500
    assert body == {"error": "internal_error",
                    "message": "RuntimeError: provider refused key ***"}


# ---------------------------------------------------------------- protected reads


@pytest.mark.parametrize("path", ["/status", "/events", "/traders/claude", "/metrics",
                                  "/jobs", "/leaderboard", "/equity", "/next-run"])
async def test_protected_reads_need_the_token(protected: Served, path: str) -> None:
    status, headers, body = await protected.call("GET", path)
    assert status == 401 and body["error"] == "unauthorized"
    assert headers["WWW-Authenticate"] == 'Bearer realm="arena"'


async def test_protected_reads_accept_the_bearer_token_or_the_pages_cookie(
        protected: Served) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await protected.call("GET", "/status", headers=bearer))[0] == 200
    assert (await protected.call("GET", "/status", headers={
        "Cookie": f"arena_token={TOKEN}"}))[0] == 200
    assert (await protected.call("GET", "/status", headers={
        "Cookie": "arena_token=wrong"}))[0] == 401


async def test_the_cookie_never_authorizes_a_post(protected: Served) -> None:
    status, _, _ = await protected.call("POST", "/pause", data=b"{}", headers={
        **JSON, "Cookie": f"arena_token={TOKEN}"})
    assert status == 401 and protected.target.paused is False


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/health"])
async def test_the_page_and_the_probe_stay_open_when_reads_are_protected(protected: Served,
                                                                         path: str) -> None:
    assert (await protected.call("GET", path))[0] == 200


# ---------------------------------------------------------------- Host parsing (IPv6, ports, IPs)


def guard(host: str, **kw: Any) -> Guard:
    return Guard(ControlSettings(host=host, port=8080, **kw), None)


@pytest.mark.parametrize(("header", "port", "allowed"), [
    ("[::1]:8080", 8080, True),
    ("[::1]", 80, True),  # no port: 80
    ("[0:0:0:0:0:0:0:1]:8080", 8080, False),  # the same address, not the same name
    ("[::1]:8081", 8080, False),
    ("[::2]:8080", 8080, False),
    ("::1:8080", 8080, False),  # unbracketed: not an address with a port
    ("[::1]8080", 8080, False),
])
def test_an_ipv6_bind_accepts_its_bracketed_address_and_port_only(header: str, port: int,
                                                                   allowed: bool) -> None:
    assert guard("::1", allowed_hosts=()).host_allowed(header, port) is allowed


@pytest.mark.parametrize("header", [
    "127.0.0.1:abc", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:-8080", "127.0.0.1:+8080",
    "127.0.0.1: 8080", "127.0.0.1:8080:8080", "localhost:\uff18\uff10\uff18\uff10",  # full-width
])
def test_a_bad_port_is_refused(header: str) -> None:
    assert guard("127.0.0.1").host_allowed(header, 8080) is False


@pytest.mark.parametrize(("bind", "header", "allowed"), [
    ("127.0.0.1", "10.0.0.7:8080", False),  # another IP literal than the bound one
    ("127.0.0.1", "[::1]:8080", False),
    ("0.0.0.0", "10.0.0.7:8080", True),  # a wildcard bind: any IP literal (the LAN address)
    ("0.0.0.0", "[fe80::1]:8080", True),
    ("::", "192.168.1.5:8080", True),
    ("0.0.0.0", "evil.example:8080", False),  # ... but never a foreign name
    ("0.0.0.0", "10.0.0.7.nip.io:8080", False),
    ("0.0.0.0", "10.0.0.7:9999", False),  # nor another port
])
def test_ip_literals_are_refused_unless_the_bind_is_a_wildcard(bind: str, header: str,
                                                                allowed: bool) -> None:
    assert guard(bind, allowed_hosts=()).host_allowed(header, 8080) is allowed


@pytest.mark.parametrize("host", ["[::1]:{port}", "127.0.0.1:x{port}", "127.0.0.2:{port}"])
async def test_over_http_a_foreign_ip_or_a_bad_port_is_403(api: Served, host: str) -> None:
    status, _, body = await api.call("GET", "/status",
                                     headers={"Host": host.format(port=api.server.port)})
    assert status == 403 and body["error"] == "forbidden"


async def test_a_server_bound_to_ipv6_loopback_serves_its_bracketed_host(bus: Bus) -> None:
    async for served in serve(bus, host="::1"):
        port = served.server.port
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://[::1]:{port}/status") as resp:
                assert resp.status == 200  # aiohttp sends Host: [::1]:port
            async with s.get(f"http://[::1]:{port}/status",
                             headers={"Host": f"127.0.0.1:{port}"}) as resp:
                assert resp.status == 403


# ---------------------------------------------------------------- defects found on the way


async def test_a_nul_byte_in_a_static_path_is_404_not_500(api: Served) -> None:
    status, headers, body = await api.call("GET", "/static/%00")
    assert status == 404 and body["error"] == "not_found"
    assert_secure(headers)


LIMIT = 65_536  # ControlSettings.max_body_bytes' default


async def test_a_body_of_exactly_max_body_bytes_is_accepted(api: Served) -> None:
    body = b"{" + b" " * (LIMIT - 2) + b"}"
    status, _, answer = await api.call("POST", "/pause", headers=JSON, data=body)
    assert (status, answer["paused"]) == (200, True)


async def test_a_body_one_byte_larger_is_413_naming_the_limit(api: Served) -> None:
    body = b"{" + b" " * (LIMIT - 1) + b"}"
    status, headers, answer = await api.call("POST", "/pause", headers=JSON, data=body)
    assert status == 413 and answer == {
        "error": "payload_too_large",
        "message": f"the request body is larger than {LIMIT} bytes (control.max_body_bytes)"}
    assert_secure(headers)
    assert api.target.paused is False


async def test_a_gzip_body_is_inflated_for_the_handler(api: Served) -> None:
    status, _, answer = await api.call("POST", "/pause", data=gzip.compress(b"{}"),
                                       headers={**JSON, "Content-Encoding": "gzip"})
    assert (status, answer["paused"]) == (200, True)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_body_inflating_past_the_limit_is_413(api: Served,
                                                                 encoding: str) -> None:
    inflated = b"{" + b" " * LIMIT + b"}"
    data = gzip.compress(inflated) if encoding == "gzip" else zlib.compress(inflated)
    assert len(data) < 1000
    status, _, answer = await api.call("POST", "/pause", data=data,
                                       headers={**JSON, "Content-Encoding": encoding})
    assert status == 413 and answer["message"] == (
        f"the inflated request body is larger than {LIMIT} bytes (control.max_body_bytes)")
    assert api.target.paused is False


@pytest.mark.parametrize(("encoding", "data", "status"), [
    ("gzip", b"not gzip at all", 400),
    ("gzip", gzip.compress(b"{}")[:-6], 400),  # truncated
    ("br", b"{}", 415),
])
async def test_a_body_that_cannot_be_inflated_is_refused(api: Served, encoding: str,
                                                         data: bytes, status: int) -> None:
    got, _, answer = await api.call("POST", "/pause", data=data,
                                    headers={**JSON, "Content-Encoding": encoding})
    assert got == status and answer["error"] in ("bad_request", "unsupported_media_type")
    assert api.target.paused is False


def _bomb(size: int) -> bytes:
    """Return a gzip stream of `size` zero bytes, made in chunks (never `size` in memory)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    return b"".join([*(packer.compress(chunk) for _ in range(size >> 20)), packer.flush()])


def test_a_bomb_is_stopped_after_inflating_the_limit_and_one_byte() -> None:
    data = _bomb(64 << 20)  # 64 MiB: twice what aiohttp itself would inflate before refusing
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            inflate(data, "gzip", LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * LIMIT  # the limit's worth of output (+1 byte), not 64 MiB
    assert inflate(gzip.compress(b"x" * LIMIT), "gzip", LIMIT) == b"x" * LIMIT


async def _head_timeout_server(bus: Bus) -> AsyncIterator[Served]:
    async for served in serve(bus, header_timeout_seconds=0.3):
        yield served


async def test_a_slow_request_head_is_answered_408_and_closed(bus: Bus) -> None:
    async for served in _head_timeout_server(bus):
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
            writer.write(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never ends
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), 5)  # read() returns at the close
            writer.close()
        assert raw.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"X-Content-Type-Options: nosniff" in raw
        assert raw.endswith(b'{"error":"request_timeout","message":'
                            b'"request headers not received within 0.3 s"}')
        assert [e["event"] for e in logs if e["event"] == "control.header_timeout"] == [
            "control.header_timeout"]


async def test_a_connection_that_sends_nothing_is_closed_and_a_prompt_one_is_served(
        bus: Bus) -> None:
    async for served in _head_timeout_server(bus):
        reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port)
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408")
        writer.close()
        # A kept-alive client sending whole heads is never cut, however many requests it makes.
        async with aiohttp.ClientSession() as s:
            for _ in range(3):
                async with s.get(f"{served.base}/status") as resp:
                    assert resp.status == 200


async def test_a_nul_byte_from_a_request_path_is_logged_escaped(api: Served) -> None:
    out = io.StringIO()
    arena_logging.configure("info", "console", stream=out)
    try:
        status, _, _ = await api.call("GET", "/static/%00x", headers={"Host": "evil.example"})
    finally:
        arena_logging.configure("info", "json")
    text = out.getvalue()
    assert status == 403
    assert "control.refused" in text and "\x00" not in text and "/static/\\x00x" in text
