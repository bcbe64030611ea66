"""Whole backtests through `run.py backtest`: no look-ahead, variants side by side, the arena."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from engine.market.fakebinance import FakeBinance
from tests.backtest.support import TRADERS, run_backtest, write_config
from tests.conftest import _with_database

START = datetime(2026, 10, 1, tzinfo=UTC)
POISON = START.timestamp() + 2 * 3600  # every candle opening at or after 02:00 is x10
WINDOW = ["--from", "2026-10-01T00:00", "--to", "2026-10-01T04:00", "--symbols",
          "BTCUSDT,ETHUSDT"]
# A cutoff before the window: the contamination guard lets the window run (exposure none).
CUTOFF = """
[llm.prices."claude-sonnet-4-6"]
input = 3.0
output = 15.0
training_cutoff = "2025-01-31"
"""
LLM_TRADER = CUTOFF + """
[[traders]]
name = "claude"
strategy = "llm"
provider = "anthropic"
model = "claude-sonnet-4-6"
"""


@pytest.fixture
async def other_database_url(pg_server_url: str):
    name = f"arena_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield _with_database(pg_server_url, name)
    admin = await asyncpg.connect(pg_server_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def _rows(url: str, until: float) -> dict[str, list]:
    conn = await asyncpg.connect(url)
    try:
        cut = datetime.fromtimestamp(until, UTC)
        cycles = await conn.fetch("SELECT cycle_id, started_at, snapshot FROM cycles "
                                  "WHERE started_at <= $1 ORDER BY started_at", cut)
        ids = [c["cycle_id"] for c in cycles]
        decisions = await conn.fetch(
            "SELECT cycle_id, trader, prompt_hash, decision, valid FROM decisions "
            "WHERE cycle_id = ANY($1) ORDER BY cycle_id, trader", ids)
        fills = await conn.fetch("SELECT trader, symbol, side, qty, price, fee, reason, ts "
                                 "FROM fills WHERE ts <= $1 ORDER BY ts, trader, symbol", cut)
        funding = await conn.fetch("SELECT * FROM funding WHERE ts <= $1 ORDER BY ts", cut)
        later = await conn.fetchval("SELECT count(*) FROM cycles WHERE started_at > $1", cut)
        runs = await conn.fetch("SELECT mode, source FROM runs")
    finally:
        await conn.close()
    return {"cycles": [(c["cycle_id"], c["started_at"], json.loads(c["snapshot"]))
                       for c in cycles],
            "decisions": [tuple(d) for d in decisions], "fills": [tuple(f) for f in fills],
            "funding": [tuple(f)[1:] for f in funding], "later": later,
            "runs": [tuple(r) for r in runs]}


async def test_no_look_ahead_poisoning_every_candle_after_t_changes_nothing_up_to_t(
        tmp_path, database_url, other_database_url):
    clean, poisoned = FakeBinance(), FakeBinance(poison_after=POISON)
    await clean.start()
    await poisoned.start()
    try:
        a = write_config(tmp_path, clean.rest_url, traders=TRADERS + LLM_TRADER, name="a.toml",
                         cache="a")
        b = write_config(tmp_path, poisoned.rest_url, traders=TRADERS + LLM_TRADER, name="b.toml",
                         cache="b")
        code_a, _out_a, err_a = await run_backtest(["--config", str(a), *WINDOW], database_url)
        code_b, _out_b, err_b = await run_backtest(["--config", str(b), *WINDOW],
                                                  other_database_url)
    finally:
        await clean.stop()
        await poisoned.stop()
    assert (code_a, code_b) == (0, 0), err_a + err_b
    ra, rb = await _rows(database_url, POISON), await _rows(other_database_url, POISON)

    # 00:05:02..01:55:02 (settings.toml: cycles 2 s after the boundary), then 02:00:02..
    assert len(ra["cycles"]) == 23 and ra["later"] >= 20
    assert ra["cycles"] == rb["cycles"]  # the same snapshots: prices and every indicator
    assert any(d[1] == "claude" for d in ra["decisions"])  # the LLM trader was prompted
    assert ra["decisions"] == rb["decisions"]  # the same prompts (hashes) and decisions
    assert ra["fills"] and ra["fills"] == rb["fills"]  # the same fills, price for price
    assert ra["funding"] == rb["funding"]
    after_a = await _rows(database_url, POISON + 3600)
    after_b = await _rows(other_database_url, POISON + 3600)
    assert after_a["cycles"] != after_b["cycles"]  # the poison is there once published
    assert ra["runs"][0][0] == "backtest" and ra["runs"][0][1]


TEMPLATE = "{persona}\n{actions}\n{rules}\n{answer}\n"
VARIANTS = CUTOFF.replace("{", "{{").replace("}", "}}") + """
[[traders]]
name = "claude_a"
strategy = "llm"
provider = "anthropic"
model = "claude-sonnet-4-6"
prompt_template = "{a}"

[[traders]]
name = "claude_b"
strategy = "llm"
provider = "anthropic"
model = "claude-sonnet-4-6"
prompt_template = "{b}"

[[traders]]
name = "ema_slow"
strategy = "ema_cross"
params = {{ timeframe = "15m" }}
"""


async def test_variants_of_one_model_run_side_by_side_in_one_market_pass(tmp_path,
                                                                          database_url):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(TEMPLATE.replace("{persona}", "You trade trends patiently."))
    b.write_text(TEMPLATE.replace("{persona}", "You scalp mean reversion."))
    server = FakeBinance()
    await server.start()
    try:
        config = write_config(tmp_path, server.rest_url,
                              traders=TRADERS + VARIANTS.format(a=a, b=b))
        code, out, err = await run_backtest(
            ["--config", str(config), "--from", "2026-10-01T00:00", "--to", "2026-10-01T01:00",
             "--symbols", "BTCUSDT"], database_url)
    finally:
        await server.stop()
    assert code == 0, err
    assert "backtest: variants of anthropic/claude-sonnet-4-6 side by side: claude_a, claude_b" \
        in out
    assert "backtest: variants of rule/ema_cross side by side: ema_fast, ema_slow" in out
    assert "  P(claude_a beats claude_b) = " in out and "  P(ema_fast beats ema_slow) = " in out
    assert "  ema_fast: return 95% CI " in out
    assert "backtest: LLM calls: 0 live (spent 0.0000 USD), 0 from the cache (saved 0.0000 USD)" \
        in out
    assert "backtest: warning: 5 traders compared on one market pass" in out
    assert "deflated Sharpe" in out
    conn = await asyncpg.connect(database_url)
    try:
        hashes = await conn.fetch("SELECT cycle_id, trader, prompt_hash FROM decisions "
                                  "WHERE trader LIKE 'claude_%' ORDER BY cycle_id, trader")
        traders = {r["trader"] for r in await conn.fetch("SELECT DISTINCT trader FROM "
                                                         "account_snapshots")}
    finally:
        await conn.close()
    by_cycle: dict[str, dict[str, str]] = {}
    for r in hashes:
        by_cycle.setdefault(r["cycle_id"], {})[r["trader"]] = r["prompt_hash"]
    both = [v for v in by_cycle.values() if len(v) == 2]
    assert both and all(v["claude_a"] != v["claude_b"] for v in both)  # templates hashed in
    assert traders == {"buy_and_hold", "ema_fast", "claude_a", "claude_b", "ema_slow"}
    reports = list((tmp_path / "reports").glob("*.md"))
    assert reports
    text = reports[0].read_text()
    for name in ("claude_a", "claude_b", "ema_slow", "ema_fast", "buy_and_hold"):
        assert name in text
