# ruff: noqa: RUF001 - full-width punctuation is what this module undoes
"""Turn a model's answer text into a `Decision`, tolerating what real models write. Pure.

Tolerated: JSON inside markdown fences or surrounded by prose, full-width punctuation (commas,
colons, quotes, brackets as typed with a CJK input method), numbers written as strings ("1,500",
"5x", "80%"), extra fields, a bare list of actions, a single action object, action names in
another case or with spaces/hyphens, symbols written as "BTC/USDT" or "btc". Everything else
raises `InvalidAnswer` with the exact reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator
from typing import Any

from pydantic import ValidationError

from engine.decision import ACTIONS, Decision

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\r?\n?(.*?)```", re.DOTALL)
_FULL_WIDTH = str.maketrans({
    "，": ",", "：": ":", "“": '"', "”": '"', "‘": "'", "’": "'", "＂": '"', "｛": "{",
    "｝": "}", "［": "[", "］": "]", "【": "[", "】": "]", "（": "(", "）": ")", "；": ";",
    "　": " ", "．": ".", "－": "-", "＿": "_",
})
_NUMERIC = ("size_usdt", "leverage", "stop_loss", "take_profit", "confidence")
_NULLS = {"", "null", "none", "n/a", "na", "-", "nil"}


class InvalidAnswer(ValueError):
    """An answer that cannot become a decision; the message is the exact reason."""


def parse_decision(text: str, symbols: Collection[str]) -> Decision:
    """Parse `text` into a Decision on `symbols`, or raise InvalidAnswer with the reason."""
    if not text or not text.strip():
        raise InvalidAnswer("empty answer")
    data = _find_json(text)
    actions = _actions_of(data)
    normalized = [_normalize_action(a, i, symbols) for i, a in enumerate(actions)]
    try:
        return Decision.model_validate({"actions": normalized})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InvalidAnswer(f"{loc}: {err['msg']} (got {err.get('input')!r})") from None


def _candidates(text: str) -> Iterator[str]:
    for m in _FENCE.finditer(text):
        yield m.group(2)
    yield text


def _find_json(text: str) -> Any:
    last_error = "no JSON object found"
    for variant in (text, text.translate(_FULL_WIDTH)):
        for chunk in _candidates(variant):
            chunk = chunk.strip()
            try:
                return json.loads(chunk)
            except json.JSONDecodeError as exc:
                if chunk[:1] in "{[":
                    last_error = f"invalid JSON: {exc}"
            for found in _top_level_spans(chunk):
                try:
                    value = json.loads(found)
                except json.JSONDecodeError as exc:
                    last_error = f"invalid JSON: {exc}"
                    continue
                if isinstance(value, dict | list):
                    return value
    raise InvalidAnswer(last_error)


def _top_level_spans(text: str) -> Iterator[str]:
    """Yield the outermost bracketed spans in order; never a span nested in another one."""
    i = 0
    while i < len(text):
        if text[i] in "{[":
            span = _balanced(text, i)
            if span is None:
                return  # unclosed: anything after it is inside it, never a whole answer
            yield span
            i += len(span)
        else:
            i += 1


def _balanced(text: str, start: int) -> str | None:
    """Return the bracketed span opening at `start`, skipping brackets inside strings."""
    stack: list[str] = []
    in_string = escaped = False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
        elif c in "}]":
            if not stack or stack.pop() != c:
                return None
            if not stack:
                return text[start:i + 1]
    return None


def _actions_of(data: Any) -> list[Any]:
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise InvalidAnswer(f"expected a JSON object with 'actions', got {type(data).__name__}")
    for key in ("actions", "decisions", "orders", "trades"):
        if key in data:
            value = data[key]
            if value is None:
                return []
            if not isinstance(value, list):
                raise InvalidAnswer(f"'{key}' must be a list, got {type(value).__name__}")
            return value
    if "decision" in data and isinstance(data["decision"], dict | list):
        return _actions_of(data["decision"])
    if "symbol" in data:
        return [data]
    raise InvalidAnswer(f"no 'actions' list in the answer (keys: {', '.join(sorted(data))})")


def _normalize_action(raw: Any, index: int, symbols: Collection[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidAnswer(f"actions.{index}: expected an object, got {type(raw).__name__}")
    action = {str(k).strip().lower(): v for k, v in raw.items()}
    symbol = _symbol(action.get("symbol"), index, symbols)
    kind = str(action.get("action", "")).strip().lower().replace("-", "_").replace(" ", "_")
    if kind not in ACTIONS:
        raise InvalidAnswer(f"actions.{index}: unknown action {action.get('action')!r} for "
                            f"{symbol}; expected one of {', '.join(ACTIONS)}")
    action["symbol"], action["action"] = symbol, kind
    for key in _NUMERIC:
        if key in action:
            action[key] = _number(action[key], key, index)
    if "leverage" in action and isinstance(action["leverage"], float):
        lev = action["leverage"]
        action["leverage"] = int(lev) if lev == int(lev) else lev
    conf = action.get("confidence")
    if conf is None:
        action.pop("confidence", None)
    elif isinstance(conf, float | int) and 1 < conf <= 100:
        action["confidence"] = conf / 100  # a percentage
    if action.get("reason") is None:
        action["reason"] = ""
    elif not isinstance(action["reason"], str):
        action["reason"] = json.dumps(action["reason"], ensure_ascii=False)
    return action


def _symbol(value: Any, index: int, symbols: Collection[str]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidAnswer(f"actions.{index}: missing symbol")
    s = re.sub(r"[\s/_:-]", "", value.translate(_FULL_WIDTH)).upper()
    for candidate in (s, s + "USDT", s.removesuffix("PERP")):
        if candidate in symbols:
            return candidate
    raise InvalidAnswer(f"actions.{index}: unknown symbol {value!r}; allowed: "
                        f"{', '.join(sorted(symbols))}")


def _number(value: Any, key: str, index: int) -> Any:
    if value is None or isinstance(value, bool) or isinstance(value, int | float):
        return value
    if not isinstance(value, str):
        return value  # pydantic reports the type error
    s = value.translate(_FULL_WIDTH).strip().lower()
    if s in _NULLS:
        return None
    percent = s.endswith("%")
    s = re.sub(r"(usdt|usd|\$|%|x$|,|_|\s)", "", s)
    try:
        number = float(s)
    except ValueError:
        raise InvalidAnswer(f"actions.{index}.{key}: not a number: {value!r}") from None
    return number / 100 if percent and key == "confidence" else number
