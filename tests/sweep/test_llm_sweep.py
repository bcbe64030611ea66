"""A sweep of LLM variants against a local LLM stand-in: one arena per run, the cache shared."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import pytest
import structlog

from engine.app.sweep import run_sweep
from engine.app.sweep_plan import load_sweep
from engine.market.fakebinance import FakeBinance
from tests.support.llm_server import LLMServer
from tests.support.store import fetch

SETTINGS = """
[engine]
log_format = "json"
log_level = "warning"

[feed]
futures_rest_url = "{binance}"
symbols = ["BTCUSDT"]
backfill_candles = 120
backfill_higher_candles = 20

[backtest]
cache_dir = "{tmp}/history"

[control]
enabled = false

[report]
dir = "{tmp}/reports"

[llm.providers.anthropic]
base_url = "{llm}"
max_retries = 0

[[traders]]
name = "claude"
strategy = "llm"
provider = "anthropic"
model = "claude-sonnet-4-6"
max_tokens = 500

[llm.prices."claude-haiku-4-5"]  # a test entry of the models table (engine/llm_settings.py)
input = 1.0
output = 5.0
training_cutoff = "2025-02-01"
"""

SWEEP = """
[sweep]
name = "{name}"
windows = [{{ from = "2026-10-01T00:00", to = "2026-10-01T00:30" }}]
live_llm = true
allow_contamination = true  # the stand-in remembers nothing; sonnet's cutoff is unknown

[[variant]]
name = "claude"
model = ["claude-sonnet-4-6", "claude-haiku-4-5"]
"""


@pytest.fixture(autouse=True)
def _keep_logging():
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


async def test_llm_variants_run_in_their_own_arenas_and_a_second_sweep_reads_the_cache(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({"DATABASE_URL": database_url, "ANTHROPIC_API_KEY": "sk-ant-dummy"})
    args = argparse.Namespace(yes=True, concurrency=None, ray=None, prune=False)
    async with LLMServer(delay=0.0) as llm:
        fake = FakeBinance()
        await fake.start()
        try:
            (tmp_path / "settings.toml").write_text(
                SETTINGS.format(binance=fake.rest_url, llm=llm.url, tmp=tmp_path))
            for name in ("first", "again"):
                (tmp_path / f"{name}.toml").write_text(SWEEP.format(name=name))
            code = await run_sweep(load_sweep(tmp_path / "first.toml"), args, io.StringIO(), env)
            out = capsys.readouterr().out
            assert code == 0, out
            asked = len(llm.requests)
            code = await run_sweep(load_sweep(tmp_path / "again.toml"), args, io.StringIO(), env)
            out2 = capsys.readouterr().out
            assert code == 0, out2
        finally:
            await fake.stop()

    assert "estimated LLM use before any call" in out  # the cost estimate came first
    assert asked > 0
    assert len(llm.requests) == asked  # the second sweep asked nothing: the cache answered
    runs = await fetch(database_url, "SELECT run_id, arena_id FROM runs")
    assert len(runs) == 4 and all(r["arena_id"] == r["run_id"] for r in runs)
    per_run = await fetch(database_url, "SELECT d.run_id, min(d.model) AS model, count(*) AS n "
                                        "FROM decisions d GROUP BY d.run_id")
    assert len(per_run) == 4
    assert sorted(r["model"] for r in per_run) == ["claude-haiku-4-5", "claude-haiku-4-5",
                                                   "claude-sonnet-4-6", "claude-sonnet-4-6"]
    hits = await fetch(database_url, "SELECT count(*) AS n, count(DISTINCT run_id) AS runs "
                                     "FROM llm_cache_hits")
    assert hits[0]["n"] > 0 and hits[0]["runs"] == 2  # the second sweep's two runs
