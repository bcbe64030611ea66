# ruff: noqa: RUF001 - full-width punctuation is what these tests feed in
"""Model answers into decisions: tolerant in finding the JSON, strict in judging it (pure)."""

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


def full(**fields):
    """Return one action with every field of the schema, `fields` applied."""
    return {**{k: None for k in ("size_usdt", "leverage", "stop_loss", "take_profit")},
            "confidence": 0.5, "reason": "", **fields}


def test_full_width_punctuation_is_normalized():
    text = ("｛“actions”：［｛“symbol”：“ETHUSDT”，“action”：“close”，“size_usdt”：null，"
            "“leverage”：null，“stop_loss”：null，“take_profit”：null，“confidence”：0.5，"
            "“reason”：“x”｝］｝")
    [a] = parse(text).actions
    assert (a.symbol, a.action) == ("ETHUSDT", "close")


def test_curly_quotes_inside_a_valid_string_are_left_alone():
    text = json.dumps({"actions": [{**ACTION, "reason": "he said “go”"}]}, ensure_ascii=False)
    assert parse(text).actions[0].reason == "he said “go”"


@pytest.mark.parametrize(("field", "raw"), [
    ("size_usdt", "1,500"), ("size_usdt", "2000 USDT"), ("size_usdt", "$750"),
    ("leverage", "5x"), ("leverage", "3"), ("stop_loss", "95100.5"), ("take_profit", "null"),
    ("confidence", "80%"), ("confidence", 65), ("confidence", "0.4"),
])
def test_numbers_not_written_as_json_numbers_in_range_are_refused(field, raw):
    with pytest.raises(InvalidAnswer, match=rf"^actions\.0\.{field}: "):
        parse(json.dumps({"actions": [{**ACTION, field: raw}]}))


def test_an_integral_float_leverage_is_an_integer():
    [a] = parse(json.dumps({"actions": [{**ACTION, "leverage": 4.0}]})).actions
    assert a.leverage == 4


def test_extra_fields_are_refused_by_name():
    with pytest.raises(InvalidAnswer, match=r"^actions\.0\.horizon: Extra inputs"):
        parse(json.dumps({"actions": [{**ACTION, "horizon": "4h"}]}))
    with pytest.raises(InvalidAnswer, match=r"^analysis: Extra inputs"):
        parse(json.dumps({"analysis": "x", "actions": [ACTION]}))


def test_action_names_must_be_spelled_as_listed():
    with pytest.raises(InvalidAnswer, match=r"^actions\.0\.action: "):
        parse(json.dumps({"actions": [{**ACTION, "action": "Open-Long"}]}))


@pytest.mark.parametrize("symbol", ["BTC/USDT", "btcusdt", "BTC", "BTC-USDT", "BTCUSDT-PERP"])
def test_symbols_must_be_one_of_the_allowed_symbols(symbol):
    with pytest.raises(InvalidAnswer, match=r"^actions\.0\.symbol: Input should be 'BTCUSDT'"):
        parse(json.dumps({"actions": [{**ACTION, "symbol": symbol}]}))


def test_a_bare_list_or_a_single_action_object_is_refused():
    with pytest.raises(InvalidAnswer, match=r"^\(answer\): "):
        parse(json.dumps([ACTION]))
    with pytest.raises(InvalidAnswer, match=r"^actions: Field required"):
        parse(json.dumps(ACTION))


def test_an_empty_actions_list_is_a_valid_hold():
    assert parse('{"actions": []}').actions == ()


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty answer"),
    ("I would rather not trade today.", "no JSON object found"),
    ('{"actions": [{"symbol": "BTCUSDT", "action": "open_long",, }]}',
     "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 58 "
     "(char 57)"),
    (json.dumps({"actions": [full(symbol="DOGEUSDT", action="hold")]}),
     "actions.0.symbol: Input should be 'BTCUSDT', 'ETHUSDT' or 'SOLUSDT' (got 'DOGEUSDT')"),
    (json.dumps({"actions": [full(symbol="BTCUSDT", action="buy")]}),
     "actions.0.action: Input should be 'open_long', 'open_short', 'close', 'adjust' or "
     "'hold' (got 'buy')"),
    (json.dumps({"actions": [full(symbol="BTCUSDT", action="open_long", leverage=0)]}),
     "actions.0.leverage: Input should be greater than or equal to 1 (got 0)"),
    (json.dumps({"actions": [full(symbol="BTCUSDT", action="open_long", size_usdt="lots")]}),
     "actions.0.size_usdt: must be a JSON number, not str (got 'lots')"),
    ('{"actions": {"symbol": "BTCUSDT"}}',
     "actions: Input should be a valid list (got {'symbol': 'BTCUSDT'})"),
    ('{"plan": "wait"}', "actions: Field required (got {'plan': 'wait'})"),
    ('{"actions": [{"action": "hold"}]}', "actions.0.symbol: Field required (got {'action': "
     "'hold'})"),
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
    text = json.dumps({"actions": [full(symbol="BTCUSDT", action="adjust", stop_loss=96000)]})
    (a,) = parse(text).actions
    assert (a.action, a.stop_loss, a.take_profit, a.moves_stops) == ("adjust", 96000.0, None,
                                                                     True)
    assert parse(text).trades() == (a,)


def test_hold_with_prices_stays_accepted_and_moves_stops_like_adjust():
    text = json.dumps({"actions": [full(symbol="BTCUSDT", action="hold", stop_loss=95000)]})
    (a,) = parse(text).actions
    assert a.action == "hold" and a.moves_stops
    (plain_hold,) = parse(json.dumps({"actions": [full(symbol="BTCUSDT", action="hold")]})
                          ).actions
    assert not plain_hold.moves_stops
