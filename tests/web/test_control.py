"""The control API: every endpoint against a hand-written target, auth, errors and the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from engine.bus import Bus
from engine.settings import ControlSettings, SettingsError
from engine.web.control import STREAM_CAPACITY, ControlServer, is_loopback
from tests.support.control import FakeTarget, leaderboard, snapshot

TOKEN = "s3cret-token-for-tests"
JSON = {"Content-Type": "application/json"}  # what every POST must carry


@pytest.fixture
def target() -> FakeTarget:
    return FakeTarget()


async def _client(server: ControlServer) -> TestClient:
    client = TestClient(TestServer(server.app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client(target: FakeTarget, bus: Bus) -> AsyncIterator[TestClient]:
    c = await _client(ControlServer(ControlSettings(port=0), target, bus, None))
    yield c
    await c.close()


@pytest.fixture
async def authed(target: FakeTarget, bus: Bus) -> AsyncIterator[TestClient]:
    c = await _client(ControlServer(ControlSettings(port=0), target, bus, TOKEN))
    yield c
    await c.close()


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org", ""])
def test_non_loopback_host_without_token_is_refused(host: str, bus: Bus) -> None:
    with pytest.raises(SettingsError, match="requires ARENA_CONTROL_TOKEN"):
        ControlServer(ControlSettings(host=host), FakeTarget(), bus, None)


def test_non_loopback_host_with_token_is_allowed(bus: Bus) -> None:
    server = ControlServer(ControlSettings(host="0.0.0.0"), FakeTarget(), bus, TOKEN)
    assert server.port == 8080


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts_need_no_token(host: str) -> None:
    assert is_loopback(host)


# ---------------------------------------------------------------- reads


async def test_status_returns_the_targets_status(client: TestClient, target: FakeTarget) -> None:
    resp = await client.get("/status")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == target.status()


async def test_jobs_lists_execution_statistics(client: TestClient) -> None:
    body = await (await client.get("/jobs")).json()
    assert body["jobs"][0] == {"name": "trading_cycle", "runs": 10, "errors": 1, "skips": 2,
                               "success_rate": 90.0, "last_duration": 2.5,
                               "last_error": "timeout"}


async def test_next_run_returns_the_next_scheduled_run(client: TestClient) -> None:
    body = await (await client.get("/next-run")).json()
    assert body["seconds_until_next_run"] == 120.0


async def test_leaderboard_returns_rows_best_first(client: TestClient) -> None:
    body = await (await client.get("/leaderboard")).json()
    equities = [row["equity"] for row in body["rows"]]
    assert equities == sorted(equities, reverse=True)
    assert len(body["rows"]) == 5


async def test_equity_returns_each_traders_curve(client: TestClient, target: FakeTarget) -> None:
    body = await (await client.get("/equity")).json()
    assert body["traders"]["claude"] == [list(p) for p in target.history["claude"]]


async def test_trader_returns_account_positions_and_decisions(client: TestClient) -> None:
    resp = await client.get("/traders/gpt-4o")
    body = await resp.json()
    assert resp.status == 200
    assert body["name"] == "gpt-4o"
    assert body["positions"][0]["symbol"] == "BTCUSDT"


async def test_unknown_trader_is_404_json(client: TestClient) -> None:
    resp = await client.get("/traders/nobody")
    assert resp.status == 404
    assert await resp.json() == {"error": "not_found", "message": "unknown trader 'nobody'"}


async def test_malformed_trader_name_is_400(client: TestClient) -> None:
    resp = await client.get("/traders/bad%20name!")
    assert resp.status == 400
    assert (await resp.json())["error"] == "bad_request"


async def test_health_is_200_when_healthy_and_503_when_not(
    client: TestClient, target: FakeTarget
) -> None:
    ok = await client.get("/health")
    target.healthy = False
    bad = await client.get("/health")
    assert (ok.status, bad.status) == (200, 503)
    assert (await bad.json())["ok"] is False


async def test_metrics_serves_prometheus_text(client: TestClient) -> None:
    await client.get("/status")
    resp = await client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE arena_equity_usdt gauge" in text
    assert 'arena_control_requests_total{method="GET",route="/status",status="200"}' in text


async def test_page_and_static_files_are_served(client: TestClient) -> None:
    page = await client.get("/")
    html = await page.text()
    script = await client.get("/static/app.js")
    chart = await client.get("/static/uPlot.iife.min.js")
    assert page.status == 200 and "<title>arena" in html
    assert script.status == 200 and chart.status == 200
    assert "cdn" not in html.lower()


# ---------------------------------------------------------------- commands


async def test_trigger_runs_a_cycle_and_returns_its_summary(
    client: TestClient, target: FakeTarget
) -> None:
    resp = await client.post("/trigger", headers=JSON)
    assert resp.status == 200
    assert await resp.json() == {"triggered": True,
                                 "summary": {"status": "ok", "cycle_id": "c1", "decisions": 5}}
    assert target.triggers == 1


async def test_trigger_during_a_running_cycle_is_409_with_the_reason(
    client: TestClient, target: FakeTarget
) -> None:
    target.hold = True
    first = asyncio.create_task(client.post("/trigger", headers=JSON))
    for _ in range(500):
        if target.cycle_lock.locked():
            break
        await asyncio.sleep(0.01)
    second = await client.post("/trigger", headers=JSON)
    target.release.set()
    done = await first
    assert second.status == 409
    assert await second.json() == {
        "error": "conflict", "message": "a trading cycle is already running (started by schedule)"}
    assert done.status == 200
    assert target.triggers == 1


async def test_pause_and_resume_toggle_the_scheduler(
    client: TestClient, target: FakeTarget
) -> None:
    paused = await (await client.post("/pause", headers=JSON)).json()
    assert target.paused
    again = await (await client.post("/pause", headers=JSON)).json()
    resumed = await (await client.post("/resume", headers=JSON)).json()
    assert paused == {"paused": True, "changed": True}
    assert again == {"paused": True, "changed": False}
    assert resumed == {"paused": False, "changed": True}
    assert not target.paused


async def test_post_with_a_malformed_body_is_400(client: TestClient, target: FakeTarget) -> None:
    not_json = await client.post("/pause", data=b"{nope", headers=JSON)
    not_object = await client.post("/pause", data=b"[1, 2]", headers=JSON)
    assert (not_json.status, not_object.status) == (400, 400)
    assert "not valid JSON" in (await not_json.json())["message"]
    assert not target.paused


# ---------------------------------------------------------------- auth


async def test_post_without_token_is_401_and_logged(authed: TestClient, target: FakeTarget) -> None:
    with capture_logs() as logs:
        resp = await authed.post("/pause", headers=JSON)
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert not target.paused
    refused = [e for e in logs if e["event"] == "control.auth_refused"]
    assert refused and refused[0]["log_level"] == "warning"
    assert refused[0]["reason"] == "missing"


async def test_post_with_wrong_token_is_401_and_token_never_logged(
    authed: TestClient, target: FakeTarget
) -> None:
    with capture_logs() as logs:
        resp = await authed.post("/trigger", headers={**JSON, "Authorization": f"Bearer {TOKEN}x"})
    assert resp.status == 401
    assert target.triggers == 0
    assert TOKEN not in repr(logs)


async def test_post_with_the_token_is_accepted(authed: TestClient, target: FakeTarget) -> None:
    resp = await authed.post("/pause", headers={**JSON, "Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200
    assert target.paused


async def test_gets_stay_open_when_a_token_is_set(authed: TestClient) -> None:
    for path in ("/status", "/jobs", "/leaderboard", "/health", "/metrics", "/"):
        assert (await authed.get(path)).status == 200, path


# ---------------------------------------------------------------- errors


async def test_unknown_route_is_404_json(client: TestClient) -> None:
    resp = await client.get("/nope")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"


async def test_wrong_method_is_405_json_with_allow(client: TestClient) -> None:
    resp = await client.get("/trigger")
    assert resp.status == 405
    assert (await resp.json()) == {"error": "method_not_allowed",
                                   "message": "method not allowed; use POST"}
    assert resp.headers["Allow"] == "POST"


async def test_a_failing_target_is_500_json_and_logged(client: TestClient,
                                                       target: FakeTarget) -> None:
    def broken() -> dict:
        raise KeyError("feed")

    target.status = broken  # type: ignore[method-assign]
    with capture_logs() as logs:
        resp = await client.get("/status")
    assert resp.status == 500
    assert await resp.json() == {"error": "internal_error", "message": "KeyError: 'feed'"}
    assert any(e["event"] == "control.handler_failed" for e in logs)


# ---------------------------------------------------------------- live stream


async def _read_event(resp: aiohttp.ClientResponse) -> dict:
    while True:
        line = await asyncio.wait_for(resp.content.readline(), 5)
        assert line, "stream ended"
        if line.startswith(b"data: "):
            return orjson.loads(line[6:])


async def test_stream_delivers_a_published_event(client: TestClient, bus: Bus) -> None:
    resp = await client.get("/events")
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert await resp.content.readline() == b"retry: 2000\n"
    event = snapshot("claude", 10_250.5, 1_767_225_900.0)
    bus.publish(event)
    got = await _read_event(resp)
    resp.close()
    assert got["type"] == "AccountSnapshot"
    assert got["trader"] == "claude" and got["equity"] == 10_250.5
    assert got["id"] == str(event.id)


async def test_stream_subscribes_with_drop_oldest_so_it_never_blocks(
    client: TestClient, bus: Bus
) -> None:
    resp = await client.get("/events?types=AccountSnapshot")
    await resp.content.readline()
    stats = next(v for k, v in bus.stats().items() if k.startswith("control.stream."))
    sub = next(s for s in bus._subs if s.name.startswith("control.stream."))
    resp.close()
    assert stats["capacity"] == STREAM_CAPACITY
    assert sub.policy == "drop_oldest"


async def test_stream_filters_by_type_and_refuses_unknown_types(
    client: TestClient, bus: Bus
) -> None:
    bad = await client.get("/events?types=AccountSnapshot,Bogus")
    assert bad.status == 400
    assert "Bogus" in (await bad.json())["message"]
    resp = await client.get("/events?types=Leaderboard")
    await resp.content.readline()
    bus.publish(snapshot("claude", 1.0, 1.0))
    bus.publish(leaderboard({"claude": [(1.0, 1.0)]}, 2.0))
    got = await _read_event(resp)
    resp.close()
    assert got["type"] == "Leaderboard"


# ---------------------------------------------------------------- run()


async def test_run_binds_port_zero_serves_and_stops_on_cancel(bus: Bus) -> None:
    server = ControlServer(ControlSettings(port=0), FakeTarget(), bus, None)
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.started.wait(), 5)
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as session:
        health = await session.get(f"{base}/health")
        stream = await session.get(f"{base}/events")
        await stream.content.readline()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rest = await asyncio.wait_for(stream.content.read(), 5)
        stream.close()
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{base}/health")
    assert server.port > 0 and health.status == 200
    assert b"data:" not in rest
    assert server.stream_clients == 0
