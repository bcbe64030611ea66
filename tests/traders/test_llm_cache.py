"""The LLM answer cache in Postgres (migration 0003): ask each unchanged prompt once across runs.

Real Postgres, the real SDK clients over aiohttp against a local LLM server on 127.0.0.1 (dummy
keys). The wall clock: nothing here drives a simulated one (the replay test does that).
"""

from __future__ import annotations

import json

import asyncpg
from structlog.testing import capture_logs

from engine.clock import LiveClock, SimClock
from engine.settings import Settings
from engine.store.database import migrate
from engine.traders.cache import LLMCache, cache_key
from engine.traders.fixtures import context, llm_settings, trader
from engine.traders.kinds import make_client
from engine.traders.session import LLMSession, Tape
from strategies.llm import LLMStrategy
from tests.support.llm_server import LLMServer

MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o", "deepseek": "deepseek-chat"}


def strategies(session: LLMSession, clock: LiveClock, url: str) -> list[LLMStrategy]:
    settings = llm_settings(max_retries=0)
    bases = {"anthropic": url, "openai": url + "/v1", "deepseek": url}
    out = []
    for provider, model in MODELS.items():
        ps = settings.providers[provider].model_copy(update={"base_url": bases[provider]})
        client = make_client(provider, ps, "sk-dummy", clock, session=session, trader=provider)
        out.append(LLMStrategy(trader(provider, provider, model), client, clock, settings,
                               deadline_seconds=30))
    return out


async def run(dsn: str, url: str, cycles: list[str]) -> tuple[LLMSession, list]:
    """One replay-like run: every strategy decides once per cycle id; return session, outcomes."""
    clock = LiveClock()
    session = LLMSession(clock, tape=Tape([]), cache=LLMCache(dsn),
                         prices=llm_settings().prices)
    outcomes = []
    traders = strategies(session, clock, url)
    try:
        for cycle_id in cycles:
            for s in traders:
                outcomes.append(await s.decide(context(s.name, cycle_id=cycle_id)))
    finally:
        for s in traders:
            await s.aclose()
        await session.aclose()
    return session, outcomes


async def test_a_rerun_asks_each_unchanged_prompt_once_and_reports_the_saving(database_url):
    await migrate(database_url)
    async with LLMServer(delay=0.0) as llm:
        first, asked = await run(database_url, llm.url, ["c-1", "c-2"])
        assert len(llm.requests) == 6 and first.counts["live"] == 6 and first.saved_usd == 0
        spent = first.spent_usd
        assert spent > 0

        with capture_logs() as logs:
            second, served = await run(database_url, llm.url, ["c-1", "c-2", "c-3"])
    assert len(llm.requests) == 6 + 3  # only the new cycle's prompts reached the API
    assert second.counts == {"live": 3, "replay": 0, "cache": 6, "not_recorded": 0}
    assert abs(second.saved_usd - spent) < 1e-9  # what the first run paid for these prompts
    hits = [e for e in logs if e["event"] == "llm.cache_hit"]
    assert len(hits) == 6 and all(e["saved_usd"] > 0 for e in hits)

    # Same answers, same recorded latency, same costs: a cached run compares equal.
    for a, b in zip(asked, served[:6], strict=True):
        assert (a.decision, a.raw_answer, a.latency_ms, a.cost_usd, a.request_id) == (
            b.decision, b.raw_answer, b.latency_ms, b.cost_usd, b.request_id)

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT trader, saved_usd FROM llm_cache_hits ORDER BY id")
        cached = await conn.fetch("SELECT key, hits, saved_usd, provider, model FROM llm_cache")
    finally:
        await conn.close()
    assert len(rows) == 6 and abs(sum(r["saved_usd"] for r in rows) - spent) < 1e-9
    assert len(cached) == 9 and sorted(r["hits"] for r in cached) == [0] * 3 + [1] * 6
    params = {"max_tokens": 1500, "temperature": 0.2}
    assert {r["key"] for r in cached} >= {
        cache_key(p, m, params, s.prompt_hash(context(p, cycle_id="c-1")))
        for p, m in MODELS.items() for s in strategies(first, LiveClock(), "http://x")}


async def test_a_changed_parameter_misses_the_cache(database_url):
    await migrate(database_url)
    async with LLMServer(delay=0.0) as llm:
        await run(database_url, llm.url, ["c-1"])
        clock = LiveClock()
        session = LLMSession(clock, tape=Tape([]), cache=LLMCache(database_url))
        settings = llm_settings(max_retries=0)
        ps = settings.providers["openai"].model_copy(update={"base_url": llm.url + "/v1"})
        client = make_client("openai", ps, "sk-dummy", clock, session=session, trader="openai")
        hotter = LLMStrategy(trader("openai", "openai", "gpt-4o", temperature=0.9), client,
                             clock, settings, deadline_seconds=30)
        await hotter.decide(context("openai", cycle_id="c-1"))
        await hotter.aclose()
        await session.aclose()
    assert session.counts["live"] == 1 and session.counts["cache"] == 0
    assert len(llm.requests) == 4


async def test_a_database_that_fails_is_a_miss_not_a_stop():
    clock = LiveClock()
    cache = LLMCache("postgresql://nobody@127.0.0.1:9/none")
    session = LLMSession(clock, tape=Tape([]), cache=cache)
    async with LLMServer(delay=0.0) as llm:
        [s, *_] = strategies(session, clock, llm.url)
        with capture_logs() as logs:
            out = await s.decide(context("anthropic"))
        await s.aclose()
    assert out.valid and session.counts["live"] == 1
    assert cache.errors >= 2 and any(e["event"] == "llm.cache_error" for e in logs)


def test_the_cache_is_off_in_live_runs_and_on_in_replays(tmp_path):
    from engine.app.build import build_llm_session
    from engine.app.options import Options

    s = Settings()
    assert s.llm_cache.live is False and s.llm_cache.replay is True
    session, _ = build_llm_session(s, Options(), SimClock(), None, "postgresql://x/y")
    assert session is None  # live, no recording: nothing in front of the API
    recording = tmp_path / "r.jsonl"
    recording.write_text('{"t": 1.0, "raw": "{}"}\n')
    session, _ = build_llm_session(s, Options(replay=str(recording)), SimClock(), None,
                                   "postgresql://x/y")
    assert session is not None and session.cache is not None
    live_on = s.model_copy(update={"llm_cache": s.llm_cache.model_copy(update={"live": True})})
    session, _ = build_llm_session(live_on, Options(), SimClock(), None, "postgresql://x/y")
    assert session is not None and session.cache is not None and session.tape is None


def test_a_record_with_what_orjson_refuses_is_still_stored_as_json() -> None:
    from engine.traders.cache import _record_text

    assert json.loads(_record_text({"n": 1.5, "s": "é"})) == {"n": 1.5, "s": "é"}
    assert json.loads(_record_text({"n": 2**70})) == {"n": 2**70}
