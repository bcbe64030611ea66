"""Spend caps: a trader at a daily or total cap (its own or the run's) holds with `budget`,
makes no call, is logged and alerted once, and is counted against its coverage."""

from __future__ import annotations

import dataclasses

from structlog.testing import capture_logs

from engine.events import TraderBudgetReached
from engine.llm_settings import BudgetSettings
from engine.traders.budget import Budget, TraderCaps
from engine.traders.decide import DecisionStep
from engine.traders.fixtures import llm_settings
from strategies.base import DecisionOutcome
from tests.traders.test_decisions import FakeStrategy, contexts

DAY = 86_400.0


class CostlyStrategy(FakeStrategy):
    """A fake LLM trader whose every answer costs `usd`; `trader` carries its own caps."""

    def __init__(self, name, clock, usd, *, daily=None, total=None):
        super().__init__(name, clock)
        self.usd = usd
        self.trader = type("T", (), {"daily_budget_usd": daily, "total_budget_usd": total})()

    async def decide(self, ctx) -> DecisionOutcome:
        out = await super().decide(ctx)
        return dataclasses.replace(out, cost_usd=self.usd)


def test_a_daily_cap_lasts_until_midnight_utc_and_a_total_cap_for_good():
    budget = Budget(BudgetSettings(trader_daily_usd=1.0, run_total_usd=3.0))
    budget.add("a", 0.6, 10.0)
    assert budget.capped("a", 20.0) is None
    budget.add("a", 0.5, 30.0)
    assert budget.capped("a", 40.0) == ("trader_daily_usd", 1.0, 1.1, DAY)
    assert budget.capped("b", 40.0) is None  # another trader's day is its own
    assert budget.capped("a", DAY + 1) is None  # a new UTC day
    budget.add("b", 2.0, DAY + 2)
    assert budget.capped("a", DAY + 3) == ("run_total_usd", 3.0, 3.1, float("inf"))


def test_a_traders_own_cap_replaces_the_default_one():
    budget = Budget(BudgetSettings(trader_total_usd=10.0), {"a": TraderCaps(total_usd=0.5)})
    budget.add("a", 0.5, 0.0)
    budget.add("b", 0.5, 0.0)
    assert budget.capped("a", 1.0) == ("trader_total_usd", 0.5, 0.5, float("inf"))
    assert budget.capped("b", 1.0) is None


async def test_a_capped_trader_holds_with_budget_without_calling_and_is_alerted_once(clock, bus):
    alerts = bus.subscribe("test", [TraderBudgetReached])
    rich = CostlyStrategy("rich", clock, 0.4)
    poor = CostlyStrategy("poor", clock, 0.4, daily=1.0)
    settings = llm_settings(budget={"run_total_usd": 100.0})
    step = DecisionStep({"rich": rich, "poor": poor}, settings, clock, bus)
    with capture_logs() as logs:
        for i in range(5):
            outcomes = await step.decide_all(contexts(["rich", "poor"], cycle_id=f"c-{i}"))
    assert (rich.calls, poor.calls) == (5, 3)  # 0.4 + 0.4 + 0.4 >= 1.0 after three calls
    assert outcomes["poor"].skipped == "budget" and outcomes["poor"].decision.actions == ()
    assert outcomes["rich"].skipped is None
    [event] = alerts.drain()
    assert (event.trader, event.cap, event.cap_usd, event.until) == (
        "poor", "trader_daily_usd", 1.0, (clock.time() // DAY + 1) * DAY)
    reached = [e for e in logs if e["event"] == "trader.budget_reached"]
    assert len(reached) == 1 and reached[0]["spent_usd"] == 1.2
    await clock.advance(DAY)  # the next UTC day: asked again
    outcomes = await step.decide_all(contexts(["poor"], cycle_id="c-next"))
    assert outcomes["poor"].skipped is None and poor.calls == 4


async def test_rule_based_traders_are_never_capped(clock, bus):
    rule = CostlyStrategy("rule", clock, 0.0)
    rule.provider = "rule"
    step = DecisionStep({"rule": rule}, llm_settings(budget={"run_total_usd": 0.01}), clock, bus)
    step.budget.add("other", 1.0, clock.time())
    outcomes = await step.decide_all(contexts(["rule"]))
    assert outcomes["rule"].skipped is None and rule.calls == 1
