"""The prompt: rules from settings, this cycle's facts, deterministic bytes and hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from engine.cycle import TradingCycle
from engine.decision import Action, Decision
from engine.events import BookTicker
from engine.market.book import PriceBook
from engine.market.candles import Candle, CandleStore
from engine.market.snapshot import take_snapshot
from engine.paper.broker import PaperBroker
from engine.paper.risk import RULES
from engine.paper.steps import ExecuteStep, RiskStep
from engine.settings import BrokerSettings, FeedSettings, LLMSettings, RiskSettings
from engine.traders.decide import DecideStep, DecisionStep
from engine.traders.fixtures import NOW, context, snapshot
from engine.traders.prompt import (
    RISK_LINES,
    actions_text,
    answer_text,
    build_prompt,
    load_template,
    number,
    plain,
    schema_text,
    system_prompt,
    trading_terms,
)
from strategies.base import rule_outcome
from tests.support.broker import FakeBook, broker_settings, risk_settings

POSITION = {"symbol": "BTCUSDT", "side": "long", "qty": 0.02, "entry_price": 95000.0,
            "leverage": 3, "unrealized_pnl": 40.01, "stop_loss": 93000.0,
            "take_profit": 101000.0, "liquidation_price": 63900.0, "opened_at": NOW - 600,
            "reason": "4h uptrend; exit below the 4h EMA50"}


def test_same_inputs_give_the_same_bytes_and_hash():
    a = build_prompt(context(positions=(POSITION,)))
    b = build_prompt(context(positions=(dict(reversed(POSITION.items())),)))

    assert (a.system, a.user, a.hash) == (b.system, b.user, b.hash)
    assert a.hash == hashlib.sha256(f"{a.system}\x00{a.user}".encode()).hexdigest()


def test_any_change_in_the_inputs_changes_the_hash():
    base = build_prompt(context())
    moved = build_prompt(context(snap=snapshot({"BTCUSDT": 97000.6, "ETHUSDT": 3450.25,
                                                "SOLUSDT": 187.123})))
    assert base.hash != moved.hash


def test_traders_of_one_cycle_share_its_market_lines_and_a_new_snapshot_gets_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.traders import prompt as module

    made: list[str] = []
    real = module._symbol_view

    def counted(sym: object) -> dict[str, object]:
        made.append(sym.symbol)  # type: ignore[attr-defined]
        return real(sym)

    monkeypatch.setattr(module, "_symbol_view", counted)
    snap = snapshot({"BTCUSDT": 97000.5, "ETHUSDT": 3450.25})
    a = build_prompt(context(snap=snap, trader="a"))
    b = build_prompt(context(snap=snap, trader="b", positions=(POSITION,)))
    assert sorted(made) == ["BTCUSDT", "ETHUSDT"]  # once a cycle, not once a trader
    market = a.user.split("## Market (one line per symbol)\n")[1].split("\n## Stale")[0]
    assert market in b.user and market.startswith("BTCUSDT {")
    moved = build_prompt(context(snap=snapshot({"BTCUSDT": 97001.5, "ETHUSDT": 3450.25}),
                                 trader="a"))
    assert len(made) == 4 and '"price":97001.5' in moved.user and market not in moved.user


def test_system_prompt_has_the_rules_from_risk_settings_and_the_schema():
    risk = RiskSettings(max_leverage=5, max_position_pct=25, max_open_positions=3)
    text = system_prompt(["SOLUSDT", "BTCUSDT"], risk)

    assert "Allowed symbols: BTCUSDT, SOLUSDT." in text
    assert "Leverage: integer from 1 to 5." in text
    assert "One position's notional at most 25 % of your equity." in text
    assert "At most 3 open positions." in text
    assert schema_text(["BTCUSDT", "SOLUSDT"]) in text


def test_system_prompt_does_not_change_between_cycles():
    first = build_prompt(context(cycle_id="c-1"))
    later = build_prompt(context(cycle_id="c-2", snap=snapshot(ts=NOW + 300)))
    assert first.system == later.system  # stable prefix: providers can cache it


def test_user_prompt_shows_market_account_positions_with_reasons_and_history():
    previous = ({"cycle_id": "c-0", "ts": NOW - 300, "valid": True, "error": None,
                 "actions": [{"symbol": "BTCUSDT", "action": "open_long"}]},)
    ctx = dataclasses.replace(context(positions=(POSITION,), previous=previous),
                              recent_fills=({"symbol": "BTCUSDT", "side": "buy", "qty": 0.02,
                                             "price": 95000.0, "ts": NOW - 600},))
    user = build_prompt(ctx).user

    assert "Cycle c-1 at 2026-01-01T00:00:00Z. You are trader claude." in user
    btc_line = next(line for line in user.splitlines() if line.startswith("BTCUSDT "))
    btc = json.loads(btc_line.removeprefix("BTCUSDT "))
    assert btc["price"] == 97000.5 and btc["high_24h"] == 99910.515
    assert btc["indicators"]["4h"]["ema50"] == 96903.5
    assert btc["next_funding_time"] == "2026-01-01T01:00:00Z"
    assert '"reason":"4h uptrend; exit below the 4h EMA50"' in user
    assert '"liquidation_price":63900.0' in user and '"opened_at":"2025-12-31T23:50:00Z"' in user
    assert '"cash":10000.0' in user
    assert '"price":95000.0' in user  # the recent trade
    assert '"cycle_id":"c-0"' in user


def test_stale_symbols_are_listed_and_left_out_of_the_market():
    user = build_prompt(context(snap=snapshot(stale=("ETHUSDT",)))).user

    assert "## Stale symbols, do not trade: ETHUSDT" in user
    assert not any(line.startswith("ETHUSDT ") for line in user.splitlines())
    assert any(line.startswith("SOLUSDT ") for line in user.splitlines())


def test_numbers_are_rounded_to_fixed_significant_digits():
    assert number(0.1 + 0.2) == 0.3
    assert number(97123.456789123) == 97123.457
    assert number(0.000012345678912) == 0.000012345679
    assert number(float("nan")) is None and number(-0.0) == 0.0 and number(3) == 3


def test_a_snapshot_from_the_feed_with_missing_values_still_prompts():
    settings = FeedSettings(symbols=("BTCUSDT", "ETHUSDT"))
    snap = take_snapshot(PriceBook(), CandleStore(), settings, now=NOW)
    prompt = build_prompt(context(snap=snap))

    assert snap.stale == ("BTCUSDT", "ETHUSDT")
    assert "## Stale symbols, do not trade: BTCUSDT, ETHUSDT" in prompt.user
    assert "Allowed symbols: BTCUSDT, ETHUSDT." in prompt.system


# ---------------------------------------------------------------- the prompt tells the truth


class _Recorder:
    """A rule strategy answering `actions` every cycle and keeping every context it saw."""

    def __init__(self, name: str, actions: tuple[Action, ...]) -> None:
        self.name, self.actions, self.seen = name, actions, []

    async def decide(self, ctx):
        self.seen.append(ctx)
        return rule_outcome(Decision(actions=self.actions), "recorder")


class _FixedSnapshot:
    name = "market_snapshot"

    def __init__(self, snap) -> None:
        self.snap = snap

    async def __call__(self, ctx) -> None:
        ctx.snapshot = self.snap


async def test_last_cycles_refusals_are_reported_with_rule_and_detail_and_marked(clock, bus):
    book = FakeBook()
    for s, p in (("BTCUSDT", 97000.0), ("ETHUSDT", 3450.0), ("SOLUSDT", 187.0)):
        book.set(s, p - 0.1, p + 0.1, t=NOW)
    clock.set_time(NOW)
    broker = PaperBroker(broker_settings(), risk_settings(), bus, clock, book,
                         symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    broker.open_account("t", 10_000.0)
    tiny = Action(symbol="BTCUSDT", action="open_long", size_usdt=50.0, leverage=2)
    ok = Action(symbol="ETHUSDT", action="open_long", size_usdt=500.0, leverage=2)
    strategy = _Recorder("t", (tiny, ok))
    decisions = DecisionStep({"t": strategy}, LLMSettings(), clock, bus)
    cycle = TradingCycle([_FixedSnapshot(snapshot(ts=NOW)),
                          DecideStep(decisions, broker, RiskSettings()),
                          RiskStep(broker, bus), ExecuteStep(broker)], clock, bus)

    await cycle("manual")
    await cycle("manual")

    first, second = strategy.seen
    assert first.extra["refusals"] == ()
    (refusal,) = second.extra["refusals"]
    assert (refusal["symbol"], refusal["action"], refusal["rule"]) == (
        "BTCUSDT", "open_long", "min_notional")
    assert "minimum of 100.0 USDT" in refusal["detail"]
    user = build_prompt(second).user
    assert "## Refused last cycle (rule: detail); nothing of these was executed" in user
    assert '"rule":"min_notional"' in user
    (previous,) = second.previous_decisions
    btc, eth = previous["actions"]
    assert btc["refused"].startswith("min_notional: ") and "refused" not in eth
    assert '"refused":"min_notional: ' in user


def test_funding_is_a_percentage_per_interval_with_the_interval_and_next_time():
    terms = trading_terms(BrokerSettings(), BrokerSettings().filter_for, ["BTCUSDT"], 8.0)
    prompt = build_prompt(dataclasses.replace(context(), terms=terms))
    btc = json.loads(next(line for line in prompt.user.splitlines()
                          if line.startswith("BTCUSDT ")).removeprefix("BTCUSDT "))

    assert btc["funding_rate_pct"] == 0.01  # the snapshot's rate is the fraction 0.0001
    assert "funding_rate" not in btc and "e-" not in prompt.user
    assert btc["next_funding_time"] == "2026-01-01T01:00:00Z"
    assert "per the 8 h funding interval, settled at next_funding_time" in prompt.user
    assert "Funding is settled every 8 h" in prompt.system


def test_forming_candles_are_left_out_of_the_indicators_and_closed_until_is_shown():
    candles = CandleStore()
    start = NOW - 3 * 3600  # 00:00 UTC minus 3 h: 21:00, a 15m boundary
    closes = [100.0 + i for i in range(3 * 60 - 7)]  # up to 23:52: the 23:45 bucket is forming
    candles.merge("BTCUSDT", [Candle(start + 60 * i, c, c + 1, c - 1, c, 1.0)
                              for i, c in enumerate(closes)])
    book = PriceBook()
    now = start + 60 * 173
    book.apply(BookTicker("BTCUSDT", 272.0, 1.0, 272.1, 1.0, now, now))
    snap = take_snapshot(book, candles, FeedSettings(symbols=("BTCUSDT",)), now=now)

    ind = snap.symbols["BTCUSDT"].indicators
    assert ind["1m"]["close"] == closes[-1]
    assert ind["1m"]["closed_until"] == start + 60 * len(closes)
    assert ind["15m"]["closed_until"] == NOW - 15 * 60  # the 23:30 bucket, closed at 23:45
    assert ind["15m"]["close"] == closes[164]  # the last minute of the 23:30 bucket (23:44)
    assert snap.symbols["BTCUSDT"].recent_closes["15m"][-1] == closes[164]
    prompt = build_prompt(context(snap=snap))
    assert '"closed_until":"2025-12-31T23:45:00Z"' in prompt.user
    assert "the unfinished candle of every timeframe is left out" in prompt.user


def test_every_number_the_risk_manager_and_broker_hold_the_model_to_is_in_the_prompt():
    risk = RiskSettings(max_leverage=7, max_position_pct=33.5, max_total_exposure_pct=150,
                        max_open_positions=4, min_stop_distance_pct=0.25,
                        daily_loss_limit_pct=6, max_drawdown_pct=22)
    broker = broker_settings(taker_fee=0.0004, slippage_bps=2.5)
    terms = trading_terms(broker, broker.filter_for, ["BTCUSDT", "ETHUSDT", "SOLUSDT"], 4)
    text = system_prompt(["BTCUSDT", "ETHUSDT", "SOLUSDT"], risk, terms)

    for key, line in RISK_LINES.items():
        assert line.format(v=plain(getattr(risk, key))) in text, key
    assert "taker fee of 0.04 % of its notional" in text
    assert "moved 2.5 basis points against you" in text
    assert "- BTCUSDT: min_notional 100 USDT, step_size 0.001, tick_size 0.1" in text
    assert "- ETHUSDT: min_notional 20 USDT, step_size 0.001, tick_size 0.01" in text
    assert "- SOLUSDT: min_notional 5 USDT, step_size 1, tick_size 0.01" in text
    assert "every 4 h" in text
    assert ", ".join(RULES) in text


def test_a_trader_template_replaces_the_wording_but_keeps_every_number(tmp_path):
    path = tmp_path / "terse.txt"
    path.write_text("You are a terse scalper {not a placeholder}.\n{actions}\n{rules}\n{answer}\n")
    ctx = context()
    default, terse = build_prompt(ctx), build_prompt(ctx, load_template(path))

    assert terse.system.startswith("You are a terse scalper {not a placeholder}.")
    assert actions_text() in terse.system and answer_text(ctx.snapshot.symbols) in terse.system
    assert terse.user == default.user and terse.hash != default.hash


def test_a_template_without_the_rules_is_refused(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Trade well. {actions} {answer}")
    with pytest.raises(ValueError, match=r"lacks \{rules\}"):
        load_template(path)


def test_a_backtest_prompt_says_its_funding_rate_is_the_last_settled_one():
    terms = {**trading_terms(BrokerSettings(), BrokerSettings().filter_for, ["BTCUSDT"], 8.0),
             "funding_rate": "last_settled"}  # what DecideStep(funding_settled=True) passes
    prompt = build_prompt(dataclasses.replace(context(), terms=terms))
    assert ("funding_rate_pct: the last settled rate: % of the notional longs paid (shorts "
            "received; the reverse when < 0) per the 8 h funding interval at the last funding "
            "time; the rate settled at next_funding_time is not known yet.") in prompt.user
    assert "settled at next_funding_time." not in prompt.user
    assert ("a long pays the rate settled then (funding_rate_pct is the last settled rate, "
            "not that one) % of its notional") in prompt.system


async def test_decide_step_in_a_backtest_passes_the_last_settled_funding_terms():
    from engine.cycle import CycleContext

    seen: list[dict] = []

    class Decisions:
        def __init__(self) -> None:
            self.settings, self.strategies = LLMSettings(), {"t1": None}

        def previous(self, trader):
            return ()

        def mark_refused(self, *a):
            return None

        async def decide_all(self, contexts):
            seen.extend(c.terms for c in contexts.values())
            return {}

    from engine.bus import Bus
    from engine.clock import SimClock

    book = FakeBook()
    book.set("BTCUSDT", 100.0, 100.0)
    broker = PaperBroker(broker_settings(), risk_settings(), Bus(), SimClock(), book)
    broker.open_account("t1", 1000.0)
    step = DecideStep(Decisions(), broker, RiskSettings(), funding_settled=True)
    await step(CycleContext("c1", "schedule", NOW, False, snapshot=snapshot()))
    assert seen and seen[0]["funding_rate"] == "last_settled"
