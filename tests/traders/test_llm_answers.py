# ruff: noqa: RUF001 - full-width punctuation is what these tests feed in
"""Tolerant parsing of model answers into decisions (pure, no I/O)."""

from __future__ import annotations

import json

import pytest

from engine.traders.answers import InvalidAnswer, parse_decision

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
ACTION = {"symbol": "BTCUSDT", "action": "open_long", "size_usdt": 1000, "leverage": 2,
          "stop_loss": 90000, "take_profit": 110000, "confidence": 0.7, "reason": "trend"}


def parse(text: str):
    return parse_decision(text, SYMBOLS)


def test_clean_json_is_parsed_exactly():
    d = parse(json.dumps({"actions": [ACTION]}))
    [a] = d.actions
    assert a.model_dump() == ACTION


def test_json_inside_a_markdown_fence_after_prose():
    text = f"Sure! Here you go:\n```json\n{json.dumps({'actions': [ACTION]})}\n```\nGood luck."
    assert parse(text).actions[0].symbol == "BTCUSDT"


def test_json_surrounded_by_prose_without_a_fence():
    text = f"My decision is {json.dumps({'actions': [ACTION]})} based on [the 4h trend]."
    assert parse(text).actions[0].leverage == 2


def test_prose_with_brackets_before_the_json_is_skipped():
    text = f"[note] {{not json}} then {json.dumps({'actions': [ACTION]})}"
    assert parse(text).actions[0].size_usdt == 1000


def test_full_width_punctuation_is_normalized():
    text = "｛“actions”：［｛“symbol”：“ETHUSDT”，“action”：“close”｝］｝"
    [a] = parse(text).actions
    assert (a.symbol, a.action) == ("ETHUSDT", "close")


def test_curly_quotes_inside_a_valid_string_are_left_alone():
    text = json.dumps({"actions": [{**ACTION, "reason": "he said “go”"}]}, ensure_ascii=False)
    assert parse(text).actions[0].reason == "he said “go”"


@pytest.mark.parametrize(("field", "raw", "value"), [
    ("size_usdt", "1,500", 1500.0), ("size_usdt", "2000 USDT", 2000.0),
    ("size_usdt", "$750", 750.0), ("leverage", "5x", 5), ("leverage", "3", 3),
    ("leverage", 4.0, 4), ("stop_loss", "95100.5", 95100.5), ("take_profit", "null", None),
    ("confidence", "80%", 0.8), ("confidence", 65, 0.65), ("confidence", "0.4", 0.4),
])
def test_numbers_written_as_strings_are_accepted(field, raw, value):
    [a] = parse(json.dumps({"actions": [{**ACTION, field: raw}]})).actions
    assert getattr(a, field) == value


def test_extra_fields_are_ignored():
    text = json.dumps({"analysis": "x", "actions": [{**ACTION, "horizon": "4h"}]})
    assert parse(text).actions[0].symbol == "BTCUSDT"


def test_action_names_in_another_case_or_spacing_are_normalized():
    [a] = parse(json.dumps({"actions": [{**ACTION, "action": "Open-Long"}]})).actions
    assert a.action == "open_long"


@pytest.mark.parametrize("symbol", ["BTC/USDT", "btcusdt", "BTC", "BTC-USDT", "BTCUSDT-PERP"])
def test_symbol_spellings_map_to_the_allowed_symbol(symbol):
    assert parse(json.dumps({"actions": [{**ACTION, "symbol": symbol}]})).actions[0].symbol == \
        "BTCUSDT"


def test_a_bare_list_or_a_single_action_object_is_accepted():
    assert len(parse(json.dumps([ACTION])).actions) == 1
    assert len(parse(json.dumps(ACTION)).actions) == 1


def test_an_empty_actions_list_is_a_valid_hold():
    assert parse('{"actions": []}').actions == ()


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty answer"),
    ("I would rather not trade today.", "no JSON object found"),
    ('{"actions": [{"symbol": "BTCUSDT", "action": "open_long",, }]}',
     "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 58 "
     "(char 57)"),
    ('{"actions": [{"symbol": "DOGEUSDT", "action": "hold"}]}',
     "actions.0: unknown symbol 'DOGEUSDT'; allowed: BTCUSDT, ETHUSDT, SOLUSDT"),
    ('{"actions": [{"symbol": "BTCUSDT", "action": "buy"}]}',
     "actions.0: unknown action 'buy' for BTCUSDT; expected one of open_long, open_short, "
     "close, adjust, hold"),
    ('{"actions": [{"symbol": "BTCUSDT", "action": "open_long", "leverage": 0}]}',
     "actions.0.leverage: Input should be greater than or equal to 1 (got 0)"),
    ('{"actions": [{"symbol": "BTCUSDT", "action": "open_long", "size_usdt": "lots"}]}',
     "actions.0.size_usdt: not a number: 'lots'"),
    ('{"actions": {"symbol": "BTCUSDT"}}', "'actions' must be a list, got dict"),
    ('{"plan": "wait"}', "no 'actions' list in the answer (keys: plan)"),
    ('{"actions": [{"action": "hold"}]}', "actions.0: missing symbol"),
])
def test_invalid_answers_raise_with_the_exact_reason(text, reason):
    with pytest.raises(InvalidAnswer) as exc:
        parse(text)
    assert str(exc.value) == reason


def test_an_unclosed_object_is_never_half_accepted():
    # The inner action object is complete, the answer is not: nothing may be taken from it.
    text = '{"actions": [{"symbol": "BTCUSDT", "action": "open_long", "size_usdt": 100}, {"sym'
    with pytest.raises(InvalidAnswer):
        parse(text)


def test_a_broken_outer_object_does_not_yield_an_inner_action():
    text = '{"actions": [{"symbol": "BTCUSDT", "action": "open_long"}] oops}'
    with pytest.raises(InvalidAnswer, match="invalid JSON"):
        parse(text)


def test_adjust_is_parsed_with_its_new_stops_and_counts_as_a_trade():
    text = ('{"actions":[{"symbol":"btc","action":"Adjust","stop_loss":"96,000",'
            '"take_profit":null}]}')
    (a,) = parse(text).actions
    assert (a.action, a.stop_loss, a.take_profit, a.moves_stops) == ("adjust", 96000.0, None,
                                                                     True)
    assert parse(text).trades() == (a,)


def test_hold_with_prices_stays_accepted_and_moves_stops_like_adjust():
    (a,) = parse('{"actions":[{"symbol":"BTCUSDT","action":"hold","stop_loss":95000}]}').actions
    assert a.action == "hold" and a.moves_stops
    (plain_hold,) = parse('{"actions":[{"symbol":"BTCUSDT","action":"hold"}]}').actions
    assert not plain_hold.moves_stops
