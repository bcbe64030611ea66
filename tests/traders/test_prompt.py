"""The prompt: rules from settings, this cycle's facts, deterministic bytes and hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from engine.market.book import PriceBook
from engine.market.candles import CandleStore
from engine.market.snapshot import take_snapshot
from engine.settings import FeedSettings, RiskSettings
from engine.traders.fixtures import NOW, context, snapshot
from engine.traders.prompt import ANSWER_SCHEMA, build_prompt, number, system_prompt

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


def test_system_prompt_has_the_rules_from_risk_settings_and_the_schema():
    risk = RiskSettings(max_leverage=5, max_position_pct=25, max_open_positions=3)
    text = system_prompt(["SOLUSDT", "BTCUSDT"], risk)

    assert "Allowed symbols: BTCUSDT, SOLUSDT." in text
    assert "Leverage: integer from 1 to 5." in text
    assert "at most 25.0 % of your equity" in text and "at most 3 open positions" in text
    assert json.dumps(ANSWER_SCHEMA, sort_keys=True, separators=(",", ":")) in text


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
