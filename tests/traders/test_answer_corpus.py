# ruff: noqa: RUF001 - full-width punctuation is what one test feeds in
"""One schema, really: the schema printed in the prompt and the validator agree on every answer.

A corpus of answers (written by hand in the shape models answer, good ones and each way of being
wrong the issue found) goes through `jsonschema` against the schema exactly as the prompt prints
it, and through the validator; both must accept or both refuse, and a refusal names the field.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest

from engine.decision import AnswerError, strict_schema, validate_answer
from engine.traders.answers import InvalidAnswer, parse_decision
from engine.traders.fixtures import context
from engine.traders.prompt import build_prompt, schema_text

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")

GOOD_ACTION: dict[str, Any] = {
    "symbol": "BTCUSDT", "action": "open_long", "size_usdt": 2000, "leverage": 3,
    "stop_loss": 95000, "take_profit": 104000, "confidence": 0.62, "reason": "Uptrend."}


def answer(**changes: Any) -> dict[str, Any]:
    """Return a one-action answer with `changes` applied to its action (None values kept)."""
    action = {**GOOD_ACTION, **changes}
    return {"actions": [action]}


def without(field: str) -> dict[str, Any]:
    action = {k: v for k, v in GOOD_ACTION.items() if k != field}
    return {"actions": [action]}


HOLD = {"symbol": "ETHUSDT", "action": "hold", "size_usdt": None, "leverage": None,
        "stop_loss": None, "take_profit": None, "confidence": 0.5, "reason": ""}

# (answer, the field a refusal must name; None when the answer is good)
CORPUS: list[tuple[Any, str | None]] = [
    (answer(), None),
    ({"actions": []}, None),
    ({"actions": [GOOD_ACTION, HOLD]}, None),
    (answer(leverage=None, stop_loss=None, take_profit=None), None),
    (answer(action="close", size_usdt=None), None),
    (answer(confidence=0), None),
    (answer(confidence=1), None),
    (answer(confidence=1.0), None),
    (answer(size_usdt=0), None),
    (answer(leverage=1), None),
    (answer(leverage=3.0), None),  # JSON has one number type: 3.0 is an integer to both
    (answer(reason="多头趋势"), None),
    (answer(symbol="SOLUSDT", action="adjust", size_usdt=None, leverage=None), None),
    # the disagreements issue 23 found, each refused now by both
    (answer(confidence=1.5), "confidence"),
    (answer(confidence=62), "confidence"),
    (answer(confidence=-0.1), "confidence"),
    (without("reason"), "reason"),
    (without("confidence"), "confidence"),
    (without("size_usdt"), "size_usdt"),
    (without("leverage"), "leverage"),
    (without("stop_loss"), "stop_loss"),
    (without("take_profit"), "take_profit"),
    (without("symbol"), "symbol"),
    (without("action"), "action"),
    (answer(note="extra"), "note"),
    ({"actions": [GOOD_ACTION], "comment": "extra"}, "comment"),
    (answer(leverage="3"), "leverage"),
    (answer(size_usdt="2000"), "size_usdt"),
    (answer(size_usdt="1,500"), "size_usdt"),
    (answer(confidence="80%"), "confidence"),
    (answer(leverage=2.5), "leverage"),
    (answer(leverage=0), "leverage"),
    (answer(leverage=True), "leverage"),
    (answer(size_usdt=-5), "size_usdt"),
    (answer(stop_loss=0), "stop_loss"),
    (answer(take_profit=-1), "take_profit"),
    (answer(symbol="DOGEUSDT"), "symbol"),
    (answer(symbol="btc"), "symbol"),
    (answer(symbol="BTC/USDT"), "symbol"),
    (answer(action="buy"), "action"),
    (answer(action="Open Long"), "action"),
    (answer(reason=42), "reason"),
    (answer(reason=None), "reason"),
    (answer(confidence=None), "confidence"),
    ({"actions": [GOOD_ACTION, {**GOOD_ACTION, "action": "close"}]}, "actions"),
    ({"actions": [HOLD, GOOD_ACTION, HOLD]}, "actions"),
    ({"actions": None}, "actions"),
    ({"actions": GOOD_ACTION}, "actions"),
    ({"actions": ["BTCUSDT"]}, "actions.0"),
    ({}, "actions"),
    ({"decisions": [GOOD_ACTION]}, "decisions"),
    ([GOOD_ACTION], "(answer)"),
    (GOOD_ACTION, "symbol"),
]


def printed_schema() -> dict[str, Any]:
    """Return the schema exactly as the prompt prints it (parsed back from the prompt text)."""
    system = build_prompt(context()).system
    text = schema_text(SYMBOLS)
    assert text in system
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_accepts(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def test_the_prompt_prints_the_schema_of_its_own_symbols():
    schema = printed_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    item = schema["properties"]["actions"]["items"]
    assert item["properties"]["symbol"]["enum"] == list(SYMBOLS)
    assert sorted(item["required"]) == sorted(GOOD_ACTION)
    assert item["additionalProperties"] is False and schema["additionalProperties"] is False


@pytest.mark.parametrize(("value", "field"), CORPUS, ids=[f"{i}" for i in range(len(CORPUS))])
def test_schema_and_validator_agree(value, field):
    schema = printed_schema()
    expected_good = field is None
    assert schema_accepts(schema, value) is expected_good
    if expected_good:
        decision = validate_answer(value, SYMBOLS)
        assert len(decision.actions) == len(value["actions"])
    else:
        with pytest.raises(AnswerError) as err:
            validate_answer(value, SYMBOLS)
        assert field in str(err.value).split(":")[0] or field in str(err.value)


def test_the_whole_corpus_agrees_and_covers_both_verdicts():
    schema = printed_schema()
    verdicts = []
    for value, _ in CORPUS:
        by_schema = schema_accepts(schema, value)
        try:
            validate_answer(value, SYMBOLS)
            by_validator = True
        except AnswerError:
            by_validator = False
        verdicts.append((by_schema, by_validator))
    assert all(a == b for a, b in verdicts)
    assert sum(a for a, _ in verdicts) >= 10 and sum(not a for a, _ in verdicts) >= 30


def test_confidence_above_one_is_refused_not_rescaled():
    with pytest.raises(InvalidAnswer, match=r"actions\.0\.confidence"):
        parse_decision(json.dumps(answer(confidence=1.5)), SYMBOLS)


def test_a_refusal_names_the_field_and_the_value():
    with pytest.raises(InvalidAnswer) as err:
        parse_decision(json.dumps(answer(leverage="3")), SYMBOLS)
    assert str(err.value).startswith("actions.0.leverage:") and "'3'" in str(err.value)


def test_two_actions_on_one_symbol_name_the_symbol():
    text = json.dumps({"actions": [GOOD_ACTION, {**GOOD_ACTION, "action": "close"}]})
    with pytest.raises(InvalidAnswer, match="more than one action on BTCUSDT"):
        parse_decision(text, SYMBOLS)


def test_the_strict_schema_for_openai_is_the_same_less_the_one_per_symbol_check():
    full, strict = json.loads(schema_text(SYMBOLS)), strict_schema(SYMBOLS)
    assert "allOf" in full["properties"]["actions"]
    del full["properties"]["actions"]["allOf"]
    assert full == strict


def test_json_in_prose_with_full_width_punctuation_is_judged_by_the_same_schema():
    good = json.dumps(answer(), ensure_ascii=False).replace(",", "，").replace(":", "：")
    decision = parse_decision(f"My answer:\n```json\n{good}\n```", SYMBOLS)
    assert decision.actions[0].leverage == 3
    bad = copy.deepcopy(answer())
    bad["actions"][0]["confidence"] = 80
    with pytest.raises(InvalidAnswer, match="confidence"):
        parse_decision(f"Here: {json.dumps(bad)} done", SYMBOLS)


def test_nan_is_not_json():
    text = json.dumps(answer()).replace("0.62", "NaN")
    with pytest.raises(InvalidAnswer, match="invalid JSON"):
        parse_decision(text, SYMBOLS)
