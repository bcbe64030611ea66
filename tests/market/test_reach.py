"""Reachability in words (refused, DNS, no answer) and the offline command as the user typed it."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from engine.market import reach


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_listening_server_is_reachable() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await reach.unreachable(f"http://127.0.0.1:{port}/fapi") is None


async def test_a_refused_connection_says_refused() -> None:
    port = closed_port()
    assert await reach.unreachable(f"https://127.0.0.1:{port}") == (
        f"connection to 127.0.0.1:{port} refused")


async def test_a_name_that_does_not_resolve_says_dns() -> None:
    why = await reach.unreachable("https://fapi.binance.invalid", timeout=5)
    assert why == "DNS lookup of fapi.binance.invalid failed"


async def test_no_answer_within_the_timeout_says_so() -> None:
    # A listening socket whose backlog is full and never accepted: the connect hangs.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(0)
        port = busy.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):  # fill the accept queue
                f = socket.socket()
                f.setblocking(False)
                try:
                    f.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                fillers.append(f)
            why = await reach.unreachable(f"http://127.0.0.1:{port}", timeout=0.3)
        finally:
            for f in fillers:
                f.close()
    if why is None:
        pytest.skip("this kernel accepted past the backlog: no hanging connect to test with")
    assert why == f"no answer from 127.0.0.1:{port} within 0.3 s"


@pytest.mark.parametrize(("url", "expected"), [
    ("https://fapi.binance.com", ("fapi.binance.com", 443)),
    ("wss://fstream.binance.com", ("fstream.binance.com", 443)),
    ("http://127.0.0.1:8123/x", ("127.0.0.1", 8123)),
])
def test_host_and_port_of_a_url(url: str, expected: tuple[str, int]) -> None:
    assert reach.host_port(url) == expected


def test_the_offline_command_uses_the_interpreter_path_the_user_typed(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    venv_python = tmp_path / ".venv" / "bin" / "python"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(venv_python))
    monkeypatch.setattr(sys, "argv", ["run.py"])
    monkeypatch.setenv("PATH", "/nonexistent")  # no activated venv: the path must be shown
    assert reach.offline_command() == ".venv/bin/python run.py demo"
    monkeypatch.setattr(sys, "argv", ["./run.py"])
    assert reach.offline_command() == ".venv/bin/python ./run.py demo"


def test_an_activated_venvs_python_is_typed_by_its_name(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setattr(sys, "argv", ["run.py"])
    monkeypatch.setenv("PATH", str(bin_dir))
    assert reach.offline_command() == "python run.py demo"
