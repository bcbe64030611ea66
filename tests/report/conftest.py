"""One replay of the shipped sample through `python run.py`, shared by the report and db tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.support.live_engine import BUY_AND_HOLD, EMA_CROSS, SAMPLE

ROOT = Path(__file__).resolve().parents[2]

SETTINGS = """
[database]
spill_path = "{tmp}/spill.jsonl"
embedded_dir = "{tmp}/pg"
flush_ms = 50
[control]
enabled = false
[report]
dir = "{tmp}/reports"
[[jobs]]
name = "trading_cycle"
run = "trading_cycle"
schedule = "interval"
interval_seconds = 60
"""


@dataclass(frozen=True, slots=True)
class Replayed:
    url: str  # the database the replay wrote to
    tmp: Path
    settings: Path
    output: str  # stdout and stderr of the run
    returncode: int

    def env(self) -> dict[str, str]:
        env = {**os.environ, "DATABASE_URL": self.url}
        for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "DEEPSEEK_API_KEY"):
            env.pop(name, None)
        return env

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `python run.py *args` with this replay's settings and database."""
        return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=self.tmp,
                              env=self.env(), capture_output=True, text=True, timeout=timeout)


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="package")
def replayed(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replayed]:
    """Replay the sample (buy-and-hold and EMA-cross traders) into a database of its own."""
    name = f"arena_report_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_server_url, f'CREATE DATABASE "{name}"'))
    url = urlunsplit(urlsplit(pg_server_url)._replace(path="/" + name))
    tmp = tmp_path_factory.mktemp("replayed")
    settings = tmp / "settings.toml"
    settings.write_text(SETTINGS.replace("{tmp}", str(tmp)) + BUY_AND_HOLD + EMA_CROSS)
    probe = Replayed(url, tmp, settings, "", 0)
    proc = probe.run("--config", str(settings), "--replay", str(SAMPLE), "--fresh",
                     "--log-format", "json", timeout=180)
    try:
        yield Replayed(url, tmp, settings, proc.stdout + proc.stderr, proc.returncode)
    finally:
        asyncio.run(_admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
