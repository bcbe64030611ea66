"""The contamination guard: a window an LLM trader's model may remember is refused in one line
before anything is fetched, unless --allow-contamination; the report labels every trader's
exposure (none, partial, full, unknown) and whether it ran blind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import pytest
import structlog

from engine.app.backtest import main
from engine.app.exposure import exposure
from engine.market.fakebinance import FakeBinance
from tests.backtest.support import TRADERS, run_backtest, write_config

NOW = 1_793_491_200.0  # 2026-11-01T00:00:00Z


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def llm(cutoff: str | None, name: str = "claude") -> str:
    line = f'training_cutoff = "{cutoff}"\n' if cutoff else ""
    return f"""
[llm.prices."claude-sonnet-4-6"]
input = 3.0
output = 15.0
{line}
[[traders]]
name = "{name}"
strategy = "llm"
provider = "anthropic"
model = "claude-sonnet-4-6"
"""


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
async def server() -> Any:
    fake = FakeBinance()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.mark.parametrize(("cutoff", "start", "end", "expected"), [
    (date(2026, 9, 30), "2026-10-01T00:00", "2026-10-02T00:00", "none"),
    (date(2026, 10, 1), "2026-10-01T00:00", "2026-10-02T00:00", "full"),  # the day is seen
    (date(2026, 10, 1), "2026-10-01T00:00", "2026-10-03T00:00", "partial"),
    (date(2026, 10, 1), "2026-10-01T12:00", "2026-10-02T00:00", "full"),
    (date(2026, 12, 31), "2026-10-01T00:00", "2026-10-08T00:00", "full"),
    (date(2026, 10, 3), "2026-10-01T00:00", "2026-10-08T00:00", "partial"),
    (None, "2026-10-01T00:00", "2026-10-02T00:00", "unknown"),
])
def test_exposure_of_a_window_to_a_cutoff(cutoff: date | None, start: str, end: str,
                                          expected: str) -> None:
    assert exposure(cutoff, ts(start), ts(end)) == expected


@pytest.mark.parametrize(("cutoff", "shown"), [("2026-10-15", "2026-10-15"),
                                               ("unknown", "unknown"), (None, "unknown")])
async def test_a_window_before_the_cutoff_is_refused_in_one_line_before_any_fetch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], server: Any, cutoff: str | None,
        shown: str) -> None:
    config = write_config(tmp_path, server.rest_url, traders=TRADERS + llm(cutoff))
    code = await asyncio.to_thread(main, ["--config", str(config), "--from", "2026-10-01T00:00",
                                          "--to", "2026-10-02T00:00"], now=NOW)
    assert code == 2
    # (other lines: a stdlib logging error some earlier test's closed stream may leave)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("backtest")]
    assert err == [f"backtest error: trader claude (claude-sonnet-4-6) has training cutoff "
                   f"{shown}: the window 2026-10-01T00:00 to 2026-10-02T00:00 UTC starts before "
                   "the cutoff is known to be past, so the model may remember it; pick a later "
                   "window or pass --allow-contamination"]
    assert server.requests == []  # nothing fetched


def test_rule_traders_and_a_model_trained_before_the_window_pass_the_guard(
        tmp_path: Path) -> None:
    from engine.app.backtest import parser, plan
    from engine.settings import load_settings

    settings = load_settings(write_config(tmp_path, "http://127.0.0.1:9",
                                          traders=TRADERS + llm("2026-09-30")))
    args = parser().parse_args(["--from", "2026-10-01T00:00", "--to", "2026-10-02T00:00"])
    assert [t.name for t in plan(settings, args, NOW).traders] == [
        "buy_and_hold", "ema_fast", "claude"]


async def test_allow_contamination_runs_it_and_the_report_labels_the_exposure(
        tmp_path: Path, database_url: str) -> None:
    server = FakeBinance()
    await server.start()
    try:
        config = write_config(tmp_path, server.rest_url, traders=TRADERS + llm("2026-10-01"))
        code, out, err = await run_backtest(
            ["--config", str(config), "--from", "2026-10-01T00:00", "--to", "2026-10-01T01:00",
             "--symbols", "BTCUSDT", "--allow-contamination"], database_url)
    finally:
        await server.stop()
    assert code == 0, err
    assert "backtest: memory exposure: claude full (cutoff 2026-10-01)" in out
    conn = await asyncpg.connect(database_url)
    try:
        labels = orjson.loads(await conn.fetchval("SELECT labels FROM runs"))
    finally:
        await conn.close()
    assert labels == {"claude": {"model": "claude-sonnet-4-6", "cutoff": "2026-10-01",
                                 "exposure": "full", "blind": False}}
    text = next((tmp_path / "reports").glob("*.md")).read_text()
    assert "| claude | claude-sonnet-4-6 | 2026-10-01 | full | no |" in text  # its table
    assert "claude-sonnet-4-6 [full exposure]" in text  # the leaderboard's model cell
