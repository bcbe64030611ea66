# ruff: noqa: RUF001 - full-width punctuation is what this module undoes
"""Turn a model's answer text into a `Decision`: tolerant in finding the JSON, strict in judging it.

Finding the answer tolerates what real models write around it: JSON inside markdown fences or
surrounded by prose, and full-width punctuation (commas, colons, quotes, brackets as typed with a
CJK input method) outside and inside it. The JSON found is then judged by the one answer schema
(`engine.decision.validate_answer`): exactly what the schema in the prompt accepts is accepted
(no numbers as strings, no percentages, no extra keys, no missing fields, the configured symbols
only, one action per symbol). Everything else raises `InvalidAnswer` naming the field and why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator
from typing import Any

from engine.decision import AnswerError, Decision, validate_answer

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\r?\n?(.*?)```", re.DOTALL)
_FULL_WIDTH = str.maketrans({
    "，": ",", "：": ":", "“": '"', "”": '"', "‘": "'", "’": "'", "＂": '"', "｛": "{",
    "｝": "}", "［": "[", "］": "]", "【": "[", "】": "]", "（": "(", "）": ")", "；": ";",
    "　": " ", "．": ".", "－": "-", "＿": "_",
})


class InvalidAnswer(ValueError):
    """An answer that cannot become a decision; the message is the exact reason."""


def parse_decision(text: str, symbols: Collection[str]) -> Decision:
    """Parse `text` into a Decision on `symbols`, or raise InvalidAnswer with the reason."""
    if not text or not text.strip():
        raise InvalidAnswer("empty answer")
    data = _find_json(text)
    try:
        return validate_answer(data, symbols)
    except AnswerError as exc:
        raise InvalidAnswer(str(exc)) from None


def _no_constants(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_no_constants)


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
                return _loads(chunk)
            except json.JSONDecodeError as exc:
                if chunk[:1] in "{[":
                    last_error = f"invalid JSON: {exc}"
            for found in _top_level_spans(chunk):
                try:
                    value = _loads(found)
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
