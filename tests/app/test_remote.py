"""`run.py trigger | pause | resume | status` against a real control API: the token, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from engine.app import remote
from engine.bus import Bus
from engine.settings import ControlSettings
from engine.web.control import ControlServer
from tests.support.control import FakeTarget

TOKEN = "s3cret-token-for-remote-tests"


@pytest.fixture
async def api(bus: Bus) -> AsyncIterator[tuple[str, FakeTarget]]:
    target = FakeTarget()
    server = TestServer(ControlServer(ControlSettings(port=0), target, bus, TOKEN).app,
                        host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}/", target
    await server.close()


async def run(command: str, url: str, token: str | None,
              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              ) -> tuple[int, str, str]:
    if token is None:
        monkeypatch.delenv("ARENA_CONTROL_TOKEN", raising=False)
    else:
        monkeypatch.setenv("ARENA_CONTROL_TOKEN", token)
    with capture_logs():  # the in-process server's log lines stay out of stdout
        code = await asyncio.to_thread(remote.main, command, ["--url", url])
    out, err = capsys.readouterr()
    return code, out, err


async def test_with_the_token_each_command_does_what_it_says(api, monkeypatch, capsys) -> None:
    url, target = api
    assert await run("pause", url, TOKEN, monkeypatch, capsys) == (
        0, "pause: scheduled jobs paused\n", "")
    assert target.paused
    assert await run("resume", url, TOKEN, monkeypatch, capsys) == (
        0, "resume: scheduled jobs running\n", "")
    assert not target.paused
    code, out, _ = await run("trigger", url, TOKEN, monkeypatch, capsys)
    assert (code, out, target.triggers) == (0, "trigger: cycle c1 ok: ? valid decision(s), "
                                               "? fill(s), ? s\n", 1)
    code, out, _ = await run("status", url, TOKEN, monkeypatch, capsys)
    assert code == 0 and out.splitlines()[1] == "feed: None, stale: SOLUSDT, DOGEUSDT"
    assert "job trading_cycle: next 2026-01-01T01:00:00Z" in out


async def test_without_or_with_a_wrong_token_a_command_is_refused_in_one_line(
        api, monkeypatch, capsys) -> None:
    url, target = api
    for token in (None, "wrong"):
        code, out, err = await run("pause", url, token, monkeypatch, capsys)
        assert (code, out) == (2, "") and err.count("\n") == 1
        assert err.startswith(f"pause: the engine at {url} wants its token: set "
                              "ARENA_CONTROL_TOKEN")
    assert not target.paused


async def test_a_trigger_during_a_running_cycle_is_refused_with_exit_1(
        api, monkeypatch, capsys) -> None:
    url, target = api
    target.hold = True
    first = asyncio.create_task(target.trigger())
    await asyncio.sleep(0)  # the fake's lock is taken (no time passes)
    code, out, err = await run("trigger", url, TOKEN, monkeypatch, capsys)
    target.release.set()
    await first
    assert (code, out) == (1, "")
    assert "refused by the engine" in err and "HTTP 409" in err and "already running" in err
