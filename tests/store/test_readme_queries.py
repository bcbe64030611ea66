"""The docs' example queries (docs/operations/postgres.md) give the right answer after mixed live
and replay runs."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

from engine.events import DecisionMade, PositionClosed
from engine.store.database import migrate
from tests.support.store import fetch, fill, persist, run_started, snapshot

QUERIES_PAGE = Path(__file__).resolve().parents[2] / "docs" / "operations" / "postgres.md"
NOW = time.time()


def readme_queries() -> dict[str, str]:
    """Return the example queries of the Postgres page by their comment line."""
    text = QUERIES_PAGE.read_text(encoding="utf-8")
    block = re.search(r"Example queries.*?```sql\n(.*?)```", text, re.S)
    assert block is not None, "docs/operations/postgres.md has no example queries block"
    queries = {}
    for chunk in block[1].strip().split("\n\n"):
        lines = chunk.splitlines()
        assert lines[0].startswith("-- "), chunk
        queries[lines[0][3:]] = "\n".join(lines[1:]).replace("'...'", "'c1'")
    return queries


def decision(trader: str, cost: float, ts: float) -> DecisionMade:
    return DecisionMade(cycle_id="c1", trader=trader, provider="deepseek", model="deepseek-chat",
                        prompt_hash="h", raw_answer="{}", decision={"actions": []}, valid=True,
                        error=None, input_tokens=1, output_tokens=1, cache_read_tokens=0,
                        cache_write_tokens=0, cost_usd=cost, latency_ms=1.0, request_id=None,
                        ts=ts)


def closed(trader: str, pnl: float, ts: float) -> PositionClosed:
    return PositionClosed(trader=trader, symbol="BTCUSDT", side="long", qty=0.01,
                          entry_price=100_000.0, exit_price=101_000.0, realized_pnl=pnl, fees=0.1,
                          reason="take_profit", opened_at=ts - 60, cycle_id=None, ts=ts)


async def test_the_example_queries_answer_for_the_live_arena_after_a_replay(
    database_url: str,
) -> None:
    await migrate(database_url)
    queries = readme_queries()
    # A live arena, then a replay (January prices, simulated times in the past AND the future,
    # made later), then the next live start: the live answers must ignore the replay's rows.
    await persist(database_url, run_started(fresh=True, started_at=NOW - 600))
    await persist(database_url, snapshot("claude", 10_100.0, NOW - 500),
                  dataclasses.replace(fill(1, ts=NOW - 500), qty=1.0),
                  closed("claude", 5.0, NOW - 400),
                  decision("claude", 0.01, NOW - 500))
    await persist(database_url, run_started(fresh=True, started_at=NOW + 86_400, mode="replay",
                                            source="f" * 64))
    await persist(database_url, snapshot("claude", 7_000.0, NOW + 86_400),
                  snapshot("gpt-4o", 6_000.0, NOW - 30 * 86_400),
                  dataclasses.replace(fill(2, ts=NOW - 100), qty=2.0),
                  closed("claude", -50.0, NOW + 86_400), decision("claude", 0.02, NOW - 100))
    await persist(database_url, run_started(fresh=False, started_at=NOW - 60))
    await persist(database_url, snapshot("gpt-4o", 9_000.0, NOW - 50))

    leaderboard = await fetch(database_url, queries[
        "latest equity and return per trader (the leaderboard as persisted), live arena"])
    assert {r["trader"]: r["equity"] for r in leaderboard} == {"claude": 10_100.0,
                                                               "gpt-4o": 9_000.0}
    curve = await fetch(database_url, queries["equity curve of one trader, live arena"])
    assert [r["equity"] for r in curve] == [10_100.0]
    buckets = await fetch(database_url, queries[
        "every trader's equity curve, 5-minute buckets (last point of each bucket), live arena"])
    assert sorted(r["equity"] for r in buckets) == [9_000.0, 10_100.0]
    fills = await fetch(database_url, queries["a trader's fills of the last 24 h, live arena"])
    assert [r["qty"] for r in fills] == [1.0]
    closes = await fetch(database_url, queries[
        "the last 50 closed positions with their reason, live arena"])
    assert [r["realized_pnl"] for r in closes] == [5.0]
    runs = await fetch(database_url, queries[
        "the runs: mode (live | replay | backtest), source (replay: the file's sha256), "
        "arena starts"])
    assert [(r["mode"], r["source"]) for r in runs] == [
        ("live", None), ("replay", "f" * 64), ("live", None)]
    costs = await fetch(database_url, queries[
        "LLM cost per mode, model and day (every run, each row under its own run's mode)"])
    by_mode: dict[str, float] = {}
    for r in costs:
        by_mode[r["mode"]] = by_mode.get(r["mode"], 0.0) + r["cost_usd"]
    assert by_mode == {"live": 0.01, "replay": 0.02}
    decided = await fetch(database_url, queries[
        "what everyone decided in a cycle, and what it cost (a cycle id names one cycle of one "
        "run)"])
    assert len(decided) == 2
