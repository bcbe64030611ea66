"""One schema for the prompt, the validator and the risk manager: they cannot drift apart."""

from __future__ import annotations

import copy
import json
from typing import get_args

import pytest
from aioresponses import aioresponses
from pydantic import ValidationError

from engine.cycle import TradingCycle
from engine.decision import ACTION_HELP, ACTIONS, Action, Decision, answer_schema
from engine.events import BookTicker
from engine.paper.accounts import Account
from engine.paper.broker import PaperBroker
from engine.paper.risk import Prices, RiskManager
from engine.paper.steps import ExecuteStep, RiskStep
from engine.settings import RiskSettings
from engine.traders.answers import InvalidAnswer, parse_decision
from engine.traders.decide import DecideStep, DecisionStep
from engine.traders.fixtures import (
    NOW,
    context,
    llm_settings,
    load_fixture,
    register_fixture,
    snapshot,
    trader,
)
from engine.traders.kinds import make_client
from engine.traders.prompt import ANSWER_SCHEMA, RISK_LINES, build_prompt
from strategies.llm import LLMStrategy
from tests.support.broker import T0, FakeBook, broker_settings, snapshot_of

ITEM = ANSWER_SCHEMA["properties"]["actions"]["items"]
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def test_the_actions_are_one_list_for_schema_validator_prompt_and_help():
    assert tuple(ITEM["properties"]["action"]["enum"]) == ACTIONS
    assert get_args(Action.model_fields["action"].annotation) == ACTIONS
    assert tuple(ACTION_HELP) == ACTIONS
    system = build_prompt(context()).system
    for name in ACTIONS:
        assert f"- {name}: {ACTION_HELP[name]}." in system


def test_the_schema_fields_are_exactly_the_validators_fields():
    assert list(ITEM["properties"]) == list(Action.model_fields) == ITEM["required"]
    assert ANSWER_SCHEMA == answer_schema()
    system = build_prompt(context()).system
    assert json.dumps(answer_schema(SYMBOLS), sort_keys=True, separators=(",", ":")) in system


@pytest.mark.parametrize("field", ["size_usdt", "leverage", "stop_loss", "take_profit",
                                   "confidence"])
def test_the_schemas_bounds_are_the_validators_bounds(field):
    prop = ITEM["properties"][field]
    prop = next((p for p in prop.get("anyOf", ()) if p["type"] != "null"), prop)
    base = {"symbol": "BTCUSDT", "action": "hold"}
    integer = "integer" in prop["type"]
    step = 1 if integer else 1e-9
    if "minimum" in prop:
        Action(**base, **{field: prop["minimum"]})
        with pytest.raises(ValidationError):
            Action(**base, **{field: prop["minimum"] - step})
    if "exclusiveMinimum" in prop:
        Action(**base, **{field: prop["exclusiveMinimum"] + step})
        with pytest.raises(ValidationError):
            Action(**base, **{field: prop["exclusiveMinimum"]})
    if "maximum" in prop:
        Action(**base, **{field: prop["maximum"]})
        with pytest.raises(ValidationError):
            Action(**base, **{field: prop["maximum"] + step})
    assert {"minimum", "exclusiveMinimum"} & set(prop)  # every number has a lower bound


@pytest.mark.parametrize("name", ACTIONS)
def test_every_listed_action_is_accepted_by_the_validator_and_known_to_the_risk_manager(name):
    answer = {"actions": [{"symbol": "BTCUSDT", "action": name, "size_usdt": 1000,
                           "leverage": 2, "stop_loss": 90_000, "take_profit": 110_000,
                           "confidence": 0.5, "reason": ""}]}
    decision = parse_decision(json.dumps(answer), SYMBOLS)
    risk = RiskManager(RiskSettings(), broker_settings())
    account = Account.new("t", 10_000.0, T0)
    _, refused = risk.review(account, decision.actions, symbols=SYMBOLS,
                             prices={"BTCUSDT": Prices(100_000.0, 100_000.0, 100_000.0)},
                             stale=(), equity=10_000.0, now=T0)
    assert "unknown_action" not in {r.rule for r in refused}


def test_an_action_outside_the_schema_is_refused_by_validator_and_risk_manager():
    answer = {"actions": [{"symbol": "BTCUSDT", "action": "buy", "size_usdt": None,
                           "leverage": None, "stop_loss": None, "take_profit": None,
                           "confidence": 0.5, "reason": ""}]}
    with pytest.raises(InvalidAnswer, match=r"actions\.0\.action: .*'adjust' or 'hold'"):
        parse_decision(json.dumps(answer), SYMBOLS)
    rogue = Action.model_construct(symbol="BTCUSDT", action="buy", size_usdt=10.0)
    _, (refusal,) = RiskManager(RiskSettings(), broker_settings()).review(
        Account.new("t", 10_000.0, T0), [rogue], symbols=SYMBOLS,
        prices={"BTCUSDT": Prices(1.0, 1.0, 1.0)}, stale=(), equity=10_000.0, now=T0)
    assert refusal.rule == "unknown_action"


def test_every_risk_setting_has_its_line_in_the_prompt():
    assert set(RISK_LINES) == set(RiskSettings.model_fields)


def _answer(fixture: dict, actions: list[dict]) -> dict:
    """Return the OpenAI fixture with its message content replaced by `actions`."""
    out = copy.deepcopy(fixture)
    out["response"]["body"]["choices"][0]["message"]["content"] = json.dumps({"actions": actions})
    return out


async def test_adjust_end_to_end_moves_the_stop_that_then_closes_the_position(clock, bus):
    """A model answers open_long, then adjust: the new stop is kept, triggers, and is counted."""
    book = FakeBook()
    book.set("BTCUSDT", 97_000.0, 97_000.2, t=NOW)
    clock.set_time(NOW)
    broker = PaperBroker(broker_settings(), RiskSettings(), bus, clock, book, symbols=SYMBOLS)
    broker.open_account("gpt", 10_000.0)
    settings = llm_settings()
    base = load_fixture("openai/json_schema")
    opened = {"symbol": "BTCUSDT", "action": "open_long", "size_usdt": 2000, "leverage": 2,
              "stop_loss": 90_000, "take_profit": None, "confidence": 0.6, "reason": "trend"}
    moved = {"symbol": "BTCUSDT", "action": "adjust", "size_usdt": None, "leverage": None,
             "stop_loss": 96_500, "take_profit": 99_000, "confidence": 0.6,
             "reason": "lock in the gain"}
    with aioresponses() as mocked:
        register_fixture(mocked, _answer(base, [opened]))
        register_fixture(mocked, _answer(base, [moved]))
        client = make_client("openai", settings.providers["openai"], "sk-test", clock)
        strategy = LLMStrategy(trader("gpt", "openai", "gpt-4o"), client, clock, settings,
                               deadline_seconds=60)
        decisions = DecisionStep({"gpt": strategy}, settings, clock, bus)
        cycle = TradingCycle([_Snapshot(book), DecideStep(decisions, broker, RiskSettings()),
                              RiskStep(broker, bus), ExecuteStep(broker)], clock, bus)
        try:
            first = await cycle("manual")
            book.set("BTCUSDT", 97_500.0, 97_500.2, t=NOW)
            second = await cycle("manual")
        finally:
            await decisions.aclose()
    assert (first["fills"], second["fills"], second["rejected"]) == (1, 0, 0)
    position = broker.accounts["gpt"].positions["BTCUSDT"]
    assert (position.stop_loss, position.take_profit) == (96_500, 99_000)
    assert broker.leaderboard(None, publish=False).rows[0]["adjustments"] == 1

    book.set("BTCUSDT", 96_400.0, 96_400.2, t=NOW)
    broker.on_market(BookTicker("BTCUSDT", 96_400.0, 1.0, 96_400.2, 1.0, NOW, NOW))
    assert "BTCUSDT" not in broker.accounts["gpt"].positions
    assert broker.accounts["gpt"].state.recent_fills[-1]["reason"] == "stop_loss"


async def test_adjust_without_a_position_is_refused_as_no_position(clock, bus):
    book = FakeBook()
    book.set("BTCUSDT", 97_000.0, 97_000.2, t=NOW)
    clock.set_time(NOW)
    broker = PaperBroker(broker_settings(), RiskSettings(), bus, clock, book, symbols=SYMBOLS)
    broker.open_account("t", 10_000.0)
    adjust = Decision(actions=(Action(symbol="BTCUSDT", action="adjust", stop_loss=95_000.0),))
    _, (refusal,) = broker.review("t", adjust, snapshot_of(book, NOW), NOW, "c-1")
    assert refusal.rule == "no_position"


class _Snapshot:
    name = "market_snapshot"

    def __init__(self, book: FakeBook) -> None:
        self.book = book

    async def __call__(self, ctx) -> None:
        q = self.book.quote("BTCUSDT")
        ctx.snapshot = snapshot({"BTCUSDT": q.mid}, ts=ctx.started_at)
