"""The decision step: concurrent traders, per-trader deadlines on the engine clock, isolation,
cool-down after repeated failures, stale symbols, DecisionMade on the bus."""

from __future__ import annotations

import asyncio

import pytest
from aioresponses import aioresponses
from structlog.testing import capture_logs

from engine.decision import Action, Decision
from engine.events import DecisionMade
from engine.traders.decide import DecisionStep
from engine.traders.fixtures import context, llm_settings, register_fixture, snapshot, trader
from engine.traders.kinds import make_client
from strategies.base import DecisionOutcome, TraderContext
from strategies.llm import LLMStrategy

BTC_LONG = Decision(actions=(Action(symbol="BTCUSDT", action="open_long", size_usdt=1000,
                                    leverage=2),))


class FakeStrategy:
    """Answers `decision` after `delay` seconds of engine-clock time, or raises `error`."""

    def __init__(self, name, clock, *, delay=0.0, decision=BTC_LONG, valid=True, error=None,
                 timeout_seconds=None):
        self.name, self.provider, self.model = name, "fake", f"fake-{name}"
        self.timeout_seconds = timeout_seconds
        self._clock, self._delay = clock, delay
        self._decision, self._valid, self._error = decision, valid, error
        self.calls = 0
        self.closed = False

    async def decide(self, ctx: TraderContext) -> DecisionOutcome:
        self.calls += 1
        if self._delay:
            await self._clock.sleep(self._delay)
        if self._error:
            raise self._error
        return DecisionOutcome(decision=self._decision if self._valid else Decision.hold(),
                               raw_answer="raw", valid=self._valid,
                               error=None if self._valid else "bad answer", provider="fake",
                               model=self.model, prompt_hash="h", latency_ms=self._delay * 1000)

    async def aclose(self):
        self.closed = True


def contexts(names, snap=None, cycle_id="c-1"):
    return {n: context(n, snap=snap, cycle_id=cycle_id) for n in names}


async def wait_until(predicate, what: str) -> None:
    """Poll a condition that depends on in-process I/O (aioresponses), bounded."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_three_sdk_traders_decide_concurrently_in_the_slowest_ones_time(clock, bus):
    settings = llm_settings()
    made = bus.subscribe("test", [DecisionMade])
    arrived: list[str] = []

    def delayed(name: str, seconds: float):
        async def delay():
            arrived.append(name)
            await clock.sleep(seconds)
        return delay

    strategies = {}
    plan = [("claude", "anthropic", "claude-sonnet-4-6", "anthropic/tool_call", 0.5),
            ("deepseek", "deepseek", "deepseek-chat", "deepseek/json_mode", 1.0),
            ("gpt-4o", "openai", "gpt-4o", "openai/json_schema", 1.5)]
    with aioresponses() as mocked:
        for name, provider, model, fixture, seconds in plan:
            register_fixture(mocked, fixture, delay=delayed(name, seconds))
            client = make_client(provider, settings.providers[provider], "sk-test", clock)
            strategies[name] = LLMStrategy(trader(name, provider, model), client, clock,
                                           settings, deadline_seconds=60)
        step = DecisionStep(strategies, settings, clock, bus)
        start = clock.time()
        task = asyncio.create_task(step.decide_all(contexts(strategies)))
        try:
            # All three requests are in flight before any time passes: they run at once.
            await wait_until(lambda: len(arrived) == 3, "three requests in flight")
            finished = []
            for name, *_, seconds in plan:
                await clock.advance_to(start + seconds)
                await wait_until(lambda: len(made) > 0, f"{name}'s decision")
                finished.append(made.get_nowait().trader)
            outcomes = await task
        finally:
            task.cancel()
            await step.aclose()

    assert clock.time() - start == pytest.approx(1.5)  # the slowest, not 0.5 + 1.0 + 1.5
    assert finished == ["claude", "deepseek", "gpt-4o"]
    assert all(o.valid for o in outcomes.values())
    # Latency is wall time: the simulated 0.5/1.0/1.5 s delays do not show in it.
    assert all(0 < outcomes[n].latency_ms < 60_000 for n in finished)


async def test_fake_traders_finish_together_in_the_slowest_ones_time(clock, bus):
    strategies = {n: FakeStrategy(n, clock, delay=d)
                  for n, d in (("a", 0.5), ("b", 1.0), ("c", 1.5))}
    step = DecisionStep(strategies, llm_settings(), clock, bus)
    start = clock.time()
    task = asyncio.create_task(step.decide_all(contexts(strategies)))
    await clock.settle()  # every trader is waiting on the clock
    await clock.advance(1.5)
    outcomes = await task

    assert task.done() and clock.time() - start == 1.5
    assert {n: o.valid for n, o in outcomes.items()} == {"a": True, "b": True, "c": True}


async def test_a_trader_past_its_deadline_holds_alone(clock, bus):
    made = bus.subscribe("test", [DecisionMade])
    strategies = {"slow": FakeStrategy("slow", clock, delay=120, timeout_seconds=30),
                  "fast": FakeStrategy("fast", clock, delay=1)}
    step = DecisionStep(strategies, llm_settings(deadline_seconds=60), clock, bus)
    task = asyncio.create_task(step.decide_all(contexts(strategies)))
    await clock.settle()  # every trader is waiting on the clock
    await clock.advance(30)
    outcomes = await task

    slow = outcomes["slow"]
    assert not slow.valid and slow.decision.actions == ()
    assert slow.error == "timeout: no answer within the 30s deadline"
    assert 0 < slow.latency_ms < 30_000  # wall time: 30 simulated seconds pass at once
    assert outcomes["fast"].valid and outcomes["fast"].decision == BTC_LONG
    assert sorted(e.trader for e in made.drain()) == ["fast", "slow"]


async def test_the_default_deadline_comes_from_llm_settings(clock, bus):
    strategies = {"slow": FakeStrategy("slow", clock, delay=120)}
    step = DecisionStep(strategies, llm_settings(deadline_seconds=45), clock, bus)
    task = asyncio.create_task(step.decide_all(contexts(strategies)))
    await clock.settle()  # every trader is waiting on the clock
    await clock.advance(45)

    assert (await task)["slow"].error == "timeout: no answer within the 45s deadline"


async def test_an_exception_in_one_trader_becomes_hold_for_it_only(clock, bus):
    strategies = {"broken": FakeStrategy("broken", clock, error=RuntimeError("boom")),
                  "fine": FakeStrategy("fine", clock)}
    step = DecisionStep(strategies, llm_settings(), clock, bus)
    with capture_logs() as logs:
        outcomes = await step.decide_all(contexts(strategies))

    assert outcomes["broken"].error == "RuntimeError: boom"
    assert not outcomes["broken"].valid and outcomes["broken"].decision.actions == ()
    assert outcomes["fine"].valid
    assert any(e["event"] == "decision.failed" and e["trader"] == "broken" for e in logs)


async def test_invalid_answers_are_logged_with_raw_text_and_published(clock, bus):
    made = bus.subscribe("test", [DecisionMade])
    strategies = {"bad": FakeStrategy("bad", clock, valid=False)}
    step = DecisionStep(strategies, llm_settings(), clock, bus)
    with capture_logs() as logs:
        await step.decide_all(contexts(strategies))

    [event] = made.drain()
    assert (event.valid, event.error, event.raw_answer) == (False, "bad answer", "raw")
    assert event.decision == {"actions": []}
    [invalid] = [e for e in logs if e["event"] == "decision.invalid"]
    assert (invalid["trader"], invalid["reason"], invalid["raw"]) == ("bad", "bad answer", "raw")


async def test_a_failing_trader_cools_down_then_resumes(clock, bus):
    made = bus.subscribe("test", [DecisionMade])
    bad = FakeStrategy("bad", clock, valid=False)
    step = DecisionStep({"bad": bad}, llm_settings(max_consecutive_failures=2,
                                                   cooldown_seconds=600), clock, bus)
    with capture_logs() as logs:
        for i in range(4):
            outcomes = await step.decide_all(contexts(["bad"], cycle_id=f"c-{i}"))
        assert bad.calls == 2  # cycles 3 and 4 made no call
        assert outcomes["bad"].skipped == "cooldown"
        assert outcomes["bad"].decision.actions == ()
        assert step.cooling_down() == {"bad": clock.time() + 600}
        await clock.advance(600)
        await step.decide_all(contexts(["bad"], cycle_id="c-5"))

    assert bad.calls == 3
    events = [e["event"] for e in logs if e["event"].startswith("trader.")]
    assert events == ["trader.cooldown", "trader.resumed"]
    assert len(made.drain()) == 3  # skipped cycles publish no decision


async def test_a_valid_answer_resets_the_failure_count(clock, bus):
    flaky = FakeStrategy("flaky", clock, valid=False)
    step = DecisionStep({"flaky": flaky}, llm_settings(max_consecutive_failures=2), clock, bus)
    await step.decide_all(contexts(["flaky"]))
    flaky._valid = True
    await step.decide_all(contexts(["flaky"]))
    flaky._valid = False
    await step.decide_all(contexts(["flaky"]))
    await step.decide_all(contexts(["flaky"]))

    assert flaky.calls == 4 and step.cooling_down() != {}


async def test_actions_on_stale_symbols_are_dropped(clock, bus):
    both = Decision(actions=(Action(symbol="BTCUSDT", action="open_long", size_usdt=100),
                             Action(symbol="ETHUSDT", action="open_short", size_usdt=100)))
    strategies = {"t": FakeStrategy("t", clock, decision=both)}
    step = DecisionStep(strategies, llm_settings(), clock, bus)
    with capture_logs() as logs:
        outcomes = await step.decide_all(contexts(["t"], snap=snapshot(stale=("ETHUSDT",))))

    assert [a.symbol for a in outcomes["t"].decision.actions] == ["BTCUSDT"]
    assert outcomes["t"].valid
    [dropped] = [e for e in logs if e["event"] == "decision.stale_dropped"]
    assert dropped["symbols"] == ["ETHUSDT"]


async def test_previous_decisions_are_kept_for_the_next_prompt(clock, bus):
    step = DecisionStep({"t": FakeStrategy("t", clock)}, llm_settings(recent_decisions=2),
                        clock, bus)
    for i in range(3):
        await step.decide_all(contexts(["t"], cycle_id=f"c-{i}"))

    history = step.previous("t")
    assert [h["cycle_id"] for h in history] == ["c-1", "c-2"]
    assert history[-1]["actions"][0]["action"] == "open_long" and history[-1]["valid"]
    assert step.previous("nobody") == ()


async def test_aclose_closes_every_strategy(clock, bus):
    strategies = {n: FakeStrategy(n, clock) for n in ("a", "b")}
    step = DecisionStep(strategies, llm_settings(), clock, bus)
    await step.aclose()

    assert all(s.closed for s in strategies.values())
