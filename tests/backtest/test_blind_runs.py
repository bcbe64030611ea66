"""A blind backtest end to end: `run.py backtest --blind-and-plain --live-llm` against a local
Binance history server and a local LLM server. Every blind prompt, read at the model's end, holds
no date, clock time, epoch, real symbol or real price level, and the blind trader still trades;
the report shows blind against plain."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from engine.market.fakebinance import FakeBinance
from tests.backtest.support import TRADERS, run_backtest, write_config
from tests.support.llm_server import LLMServer

NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w])")
LEAKS = [re.compile(p) for p in (
    r"\b20\d{2}-\d{2}-\d{2}", r"\b20\d{6}T", r"(?<![\w.:])\d{1,2}:\d{2}(?![\w:])",
    r"(?<![\w.])1[4-9]\d{8}(?![\w])", r"BTCUSDT|ETHUSDT|\bBTC\b|\bETH\b")]


def llm_block(url: str) -> str:
    return f"""
[llm.providers.anthropic]
base_url = "{url}"
max_retries = 0

[llm.prices."claude-sonnet-4-6"]
input = 3.0
output = 15.0
training_cutoff = "2025-01-31"

[[traders]]
name = "claude"
strategy = "llm"
provider = "anthropic"
model = "claude-sonnet-4-6"
"""


PRICES = {"price", "bid", "ask", "last", "mark", "index", "high_24h", "low_24h", "ema20", "ema50",
          "sma20", "bb_upper", "bb_mid", "bb_lower", "close", "atr14", "recent_closes"}


def price_fields(v: object, key: str | None = None) -> list[float]:
    """Return every number under a price key of a plain market line (written independently of
    the engine's own list)."""
    if isinstance(v, dict):
        return [x for k, item in v.items() for x in price_fields(item, k)]
    if isinstance(v, list):
        return [x for item in v for x in price_fields(item, key)]
    return [float(v)] if key in PRICES and isinstance(v, int | float) else []


def prompt_text(body: dict[str, Any]) -> str:
    """Return what the model reads: the system prompt and the messages."""
    system = body.get("system")
    if isinstance(system, list):
        system = "\n".join(b.get("text", "") for b in system)
    messages = "\n".join(str(m.get("content")) for m in body.get("messages", []))
    return f"{system}\n{messages}"


async def test_a_blind_backtest_leaks_nothing_and_still_trades(tmp_path: Path,
                                                               database_url: str) -> None:
    server = FakeBinance()
    await server.start()
    try:
        async with LLMServer(delay=0.0) as llm:
            config = write_config(tmp_path, server.rest_url, traders=TRADERS + llm_block(llm.url))
            code, out, err = await run_backtest(
                ["--config", str(config), "--from", "2026-10-01T00:00", "--to",
                 "2026-10-01T01:00", "--symbols", "BTCUSDT,ETHUSDT", "--blind-and-plain",
                 "--live-llm", "--yes"], database_url, env={"ANTHROPIC_API_KEY": "sk-ant-t"})
            prompts = [prompt_text(body) for _, body in llm.requests]
    finally:
        await server.stop()
    assert code == 0, err
    blind = [p for p in prompts if "ASSET_" in p]
    plain = [p for p in prompts if "ASSET_" not in p]
    assert blind and plain and len(blind) == len(plain)
    assert "BTCUSDT" in plain[0] and re.search(LEAKS[0], plain[0])  # what blind mode hides
    real_levels = {v for p in plain for line in p.splitlines()
                   if line.startswith(("BTCUSDT {", "ETHUSDT {"))
                   for v in price_fields(json.loads(line.split(" ", 1)[1]))
                   if len(repr(v).replace(".", "").strip("0")) >= 4}
    assert real_levels
    for text in blind:
        for leak in LEAKS:
            assert not leak.search(text), (leak.pattern, leak.search(text))
        assert not {float(n) for n in NUMBER.findall(text)} & real_levels
    assert "blind vs plain: claude " in out and "claude-blind" in out
    assert "backtest: memory exposure: claude none (cutoff 2025-01-31), claude-blind none " \
           "(cutoff 2025-01-31, blind)" in out
    conn = await asyncpg.connect(database_url)
    try:
        fills = await conn.fetch("SELECT trader, symbol, price FROM fills WHERE trader = "
                                 "'claude-blind' AND reason = 'decision'")
        labels = json.loads(await conn.fetchval("SELECT labels FROM runs"))
    finally:
        await conn.close()
    assert fills and {f["symbol"] for f in fills} <= {"BTCUSDT", "ETHUSDT"}  # real units
    assert labels["claude-blind"] == {"model": "claude-sonnet-4-6", "cutoff": "2025-01-31",
                                      "exposure": "none", "blind": True, "plain": "claude"}
    report = next((tmp_path / "reports").glob("*.md")).read_text()
    assert "## Blind vs plain" in report and "| claude-sonnet-4-6 | claude |" in report
