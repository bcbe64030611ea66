"""The providers' rate budget is one token bucket per provider in Postgres, shared by every run."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from engine.store.database import migrate
from engine.traders.rate_budget import RateBudget
from tests.support.store import fetch


@dataclass(frozen=True)
class Limits:
    requests_per_minute: float = 60.0  # one a second
    tokens_per_minute: float = 6_000.0  # 100 a second
    slow_down_seconds: float = 30.0


class FakeWallClock:
    """Wall time that moves only when a budget sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
async def db(database_url: str) -> str:
    await migrate(database_url)
    return database_url


async def test_a_full_bucket_serves_without_waiting_then_calls_wait_for_the_refill(
    db: str,
) -> None:
    clock = FakeWallClock()
    budget = RateBudget(db, {"anthropic": Limits(requests_per_minute=2)}, clock)
    try:
        assert [await budget.take("anthropic", 10) for _ in range(2)] == [0.0, 0.0]
        waited = await budget.take("anthropic", 10)
    finally:
        await budget.aclose()
    assert waited == pytest.approx(30.0)  # one request refills in 60 / 2 s
    row = (await fetch(db, "SELECT requests, tokens FROM rate_buckets"))[0]
    assert row["requests"] == pytest.approx(0.0)
    assert row["tokens"] == pytest.approx(6_000 - 10)  # refilled to the cap while it waited


async def test_two_runs_share_one_bucket(db: str) -> None:
    clock = FakeWallClock()
    limits = {"openai": Limits(requests_per_minute=3)}
    one, two = RateBudget(db, limits, clock), RateBudget(db, limits, clock)
    try:
        waits = [await one.take("openai", 1), await two.take("openai", 1),
                 await one.take("openai", 1), await two.take("openai", 1)]
    finally:
        await one.aclose()
        await two.aclose()
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(20.0)  # the fourth, from either run, waits for a refill


async def test_tokens_bound_the_calls_as_well_as_requests(db: str) -> None:
    clock = FakeWallClock()
    budget = RateBudget(db, {"deepseek": Limits()}, clock)
    try:
        assert await budget.take("deepseek", 6_000) == 0.0
        waited = await budget.take("deepseek", 3_000)
    finally:
        await budget.aclose()
    assert waited == pytest.approx(30.0)  # 3,000 tokens at 100 a second


async def test_a_429_slows_every_run_using_the_provider_and_no_other(db: str) -> None:
    clock = FakeWallClock()
    limits = {"anthropic": Limits(), "openai": Limits()}
    hit, other = RateBudget(db, limits, clock), RateBudget(db, limits, clock)
    try:
        await hit.slow_down("anthropic")
        assert await other.take("openai", 1) == 0.0
        waited = await other.take("anthropic", 1)
    finally:
        await hit.aclose()
        await other.aclose()
    assert waited == pytest.approx(30.0)
    rows = await fetch(db, "SELECT provider, penalties FROM rate_buckets ORDER BY provider")
    assert [(r["provider"], r["penalties"]) for r in rows] == [("anthropic", 1), ("openai", 0)]


async def test_a_provider_without_a_budget_never_waits(db: str) -> None:
    budget = RateBudget(db, {}, FakeWallClock())
    assert await budget.take("anthropic", 1e9) == 0.0
    assert await fetch(db, "SELECT * FROM rate_buckets") == []


async def test_a_429_from_the_api_slows_the_other_runs_through_the_session(db: str) -> None:
    from engine.clock import LiveClock
    from engine.traders.fixtures import context, llm_settings, trader
    from engine.traders.kinds import make_client
    from engine.traders.session import LLMSession, Tape
    from strategies.llm import LLMStrategy
    from tests.support.llm_server import LLMServer

    clock = FakeWallClock()
    limits = {"anthropic": Limits()}
    async with LLMServer(delay=0.0) as llm:
        llm.refuse = 1
        session = LLMSession(LiveClock(), tape=Tape([]))
        session.budget = RateBudget(db, limits, clock)
        settings = llm_settings(max_retries=0)
        ps = settings.providers["anthropic"].model_copy(update={"base_url": llm.url})
        client = make_client("anthropic", ps, "sk-dummy", LiveClock(), session=session,
                             trader="claude")
        strategy = LLMStrategy(trader("claude", "anthropic", "claude-sonnet-4-6"), client,
                               LiveClock(), settings, deadline_seconds=30)
        other = RateBudget(db, limits, clock)  # another run of the sweep
        try:
            await strategy.decide(context("claude", cycle_id="c-1"))
            waited = await other.take("anthropic", 1)
        finally:
            await strategy.aclose()
            await session.aclose()
            await other.aclose()
    assert len(llm.requests) == 1  # the 429 was the answer
    assert waited == pytest.approx(30.0)
    rows = await fetch(db, "SELECT penalties FROM rate_buckets WHERE provider = 'anthropic'")
    assert rows[0]["penalties"] == 1
