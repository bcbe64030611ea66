"""Shared fixtures: a simulated clock, a bus, and a real Postgres database per test.

The database comes from TEST_DATABASE_URL when set (CI uses the machine's PostgreSQL), else from
an embedded pgserver started once per session. Each test that asks for `database_url` gets a fresh,
empty database of its own, dropped afterwards.
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from engine.bus import Bus
from engine.clock import SimClock


@pytest.fixture(autouse=True)
def _thawed_heap() -> Iterator[None]:
    """A test that readies an engine without running it to its end freezes the heap
    (engine.app.memory): thaw it, so the next test's garbage is collected as usual."""
    yield
    gc.unfreeze()


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def bus() -> Bus:
    return Bus()


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Return the URL of a server where tests may create databases."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _with_database(url: str, name: str) -> str:
    """Return `url` pointing at database `name` (handles socket-style pgserver URLs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
async def database_url(pg_server_url: str) -> AsyncIterator[str]:
    """Create a fresh empty database for one test and return its URL."""
    name = f"arena_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(pg_server_url, name)
    finally:
        admin = await asyncpg.connect(pg_server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
