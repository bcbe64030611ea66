"""The hand-written LLM fixtures are synthetic: each body must still validate against the SDKs'
own response models, so a shape that drifts from the real APIs fails here, not in production.

Success bodies: `anthropic.types.Message`, `openai.types.chat.ChatCompletion` (DeepSeek speaks the
OpenAI format). Error bodies: `anthropic.types.ErrorResponse`, and OpenAI's `{"error":
ErrorObject}`. Besides validating, every field must be one the model knows (pydantic keeps unknown
ones in `model_extra`), except the documented DeepSeek extensions.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from anthropic.types import ErrorResponse, Message
from openai.types import ErrorObject
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError

from engine.traders.fixtures import DATA, load_fixture

FIXTURES = sorted(f"{p.parent.name}/{p.stem}" for p in DATA.glob("*/*.json"))
# DeepSeek's additions to the OpenAI format (api-docs.deepseek.com): the reasoner's thoughts and
# its context-cache token counts.
DEEPSEEK_EXTRAS = {"reasoning_content", "prompt_cache_hit_tokens", "prompt_cache_miss_tokens"}


def unknown_fields(model: Any, path: str = "") -> set[str]:
    """Return the dotted paths of fields no model declares, anywhere in `model`."""
    found: set[str] = set()
    if isinstance(model, BaseModel):
        for name in model.model_extra or {}:
            found.add(f"{path}{name}")
        for name in type(model).model_fields:
            found |= unknown_fields(getattr(model, name), f"{path}{name}.")
    elif isinstance(model, list | tuple):
        for item in model:
            found |= unknown_fields(item, path)
    return found


def validate(provider: str, status: int, body: Any) -> BaseModel:
    """Return `body` parsed by the SDK model of its provider and status (raises when it drifts)."""
    if provider == "anthropic":
        return (Message if status == 200 else ErrorResponse).model_validate(body)
    if status == 200:
        return ChatCompletion.model_validate(body)
    if set(body) != {"error"}:
        raise ValueError(f"an OpenAI error body is {{'error': ...}}, got keys {sorted(body)}")
    return ErrorObject.model_validate(body["error"])


def test_every_fixture_is_covered() -> None:
    assert len(FIXTURES) == 15
    assert {f.split("/")[0] for f in FIXTURES} == {"anthropic", "openai", "deepseek"}


@pytest.mark.parametrize("name", FIXTURES)
def test_each_fixture_body_matches_the_sdk_model(name: str) -> None:
    fixture = load_fixture(name)
    provider, status = fixture["provider"], fixture["response"]["status"]
    body = fixture["response"]["body"]
    assert isinstance(body, dict), "a JSON body"
    model = validate(provider, status, body)
    allowed = DEEPSEEK_EXTRAS if provider == "deepseek" else set()
    unknown = {p for p in unknown_fields(model) if p.rsplit(".", 1)[-1] not in allowed}
    assert unknown == set(), f"{name}: fields the SDK does not know: {sorted(unknown)}"
    if status == 200:
        assert fixture["request"]["method"] == "POST"
        assert json.dumps(fixture["request"]["body"])  # the request that produced it is kept


@pytest.mark.parametrize(("name", "mutate"), [
    ("anthropic/tool_call", lambda b: b.pop("usage")),
    ("anthropic/tool_call", lambda b: b.update(stop_reason="finished")),
    ("anthropic/tool_call", lambda b: b["content"][0].update(type="tool_call")),
    ("anthropic/overloaded_529", lambda b: b.update(error="Overloaded")),
    ("openai/json_schema", lambda b: b["choices"][0].pop("finish_reason")),
    ("openai/json_schema", lambda b: b["choices"][0]["message"].update(role="bot")),
    ("openai/rate_limited_429", lambda b: b.update(message="flat error")),
    ("deepseek/json_mode", lambda b: b.update(created="yesterday")),
])
def test_a_drifted_shape_is_caught(name: str, mutate: Any) -> None:
    fixture = load_fixture(name)
    body = copy.deepcopy(fixture["response"]["body"])
    mutate(body)
    with pytest.raises((ValidationError, ValueError)):
        validate(fixture["provider"], fixture["response"]["status"], body)


def test_an_unknown_field_is_caught_too() -> None:
    body = copy.deepcopy(load_fixture("openai/json_schema")["response"]["body"])
    body["choices"][0]["message"]["contnet"] = "typo"
    assert unknown_fields(validate("openai", 200, body)) == {"choices.message.contnet"}
