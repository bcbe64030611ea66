"""One redactor: registered secrets in every form, credential shapes registered or not, and what
must stay readable (hashes, UUIDs, provider ids, token counts)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from engine import logging as arena_logging
from engine import redact
from engine.settings import Settings

UNREGISTERED = {  # shaped like a key, never registered: the rules alone must catch them
    "openai": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
    "anthropic": "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe-dCbA_987654321",
    "deepseek": "sk-0123456789abcdef0123456789abcdef",
    "groq": "gsk_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7",
    "google": "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "slack": "xoxb-123456789012-abcdefghijklmnop",
    "telegram": "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
    "mistral": "3uK9zQ2mP7xR4tW8yV1nB6cD5eF0gH2jL",
}


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    redact.clear_secrets()
    yield
    redact.clear_secrets()


@pytest.mark.parametrize("name", sorted(UNREGISTERED))
def test_a_key_shaped_token_is_redacted_without_being_registered(name: str) -> None:
    key = UNREGISTERED[name]
    text = f"Incorrect API key provided: {key}. You can find your API key at https://x.test"
    assert redact.redact(text) == ("Incorrect API key provided: ***. You can find your API key "
                                   "at https://x.test")


@pytest.mark.parametrize(("text", "expected"), [
    ('{"Authorization": "Bearer abc.def-ghi_jkl"}', '{"Authorization": "Bearer ***"}'),
    ("authorization: bearer 0123456789", "authorization: bearer ***"),
    ("postgresql://arena:pg%40ss-word@db:5432/arena", "postgresql://arena:***@db:5432/arena"),
    ("api_key=abcd1234efgh&x=1", "api_key=***&x=1"),
    ('{"x-api-key": "short-but-8+"}', '{"x-api-key": "***"}'),
    ("token: zzzz9zzzzz password=secretvalue-long", "token: *** password=***"),
    ("invalid x-api-key: Incorrect key", "invalid x-api-key: Incorrect key"),
    ("https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage",
     "https://api.telegram.org/bot***/sendMessage"),
])
def test_credential_shapes_keep_their_label_and_lose_their_value(text: str,
                                                                 expected: str) -> None:
    assert redact.redact(text) == expected


@pytest.mark.parametrize("text", [
    "prompt_hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "cycle 0192f3a4-5b6c-7d8e-9f01-23456789abcd",
    "chatcmpl-B9MBs8CjcvOU2jLn4n60ST7sJWyhC req_011CSHoEeqs5C35K2UUqR7Fy",
    "msg_01XFDUDYJgAACzvnptvVoYEL request_id=req_8f3c1a9e5b2d4c7f9a1e3b5d7c9f2a4e",
    "max_tokens=12345678 input_tokens: 99999999 prompt_tokens=123456789",
    "http 401 invalid_request_error: invalid x-api-key (request_id=req_011CVb1)",
    "BTCUSDT open_long size_usdt=1000 leverage=2 at 2026-12-07T16:33:25.123Z",
    "sk-short is not a key; neither is task-0123456789abcdefghij",
])
def test_what_is_not_a_credential_stays_readable(text: str) -> None:
    assert redact.redact(text) == text


def test_a_registered_secret_is_removed_in_every_form_it_can_take() -> None:
    secret = 'pa"ss\\wörd/+ x'
    redact.register_secrets([secret, "abc"])  # "abc": too short to register
    forms = [secret, json.dumps(secret)[1:-1], repr(secret)[1:-1],
             repr(secret.encode("utf-8", "backslashreplace"))[2:-1],
             "pa%22ss%5Cw%C3%B6rd%2F%2B%20x"]
    for form in forms:
        assert redact.redact(f"<{form}>") == "<***>", form
    assert redact.redact("abc") == "abc"


def test_every_env_variable_a_setting_names_is_a_secret() -> None:
    settings = Settings.model_validate({"alerts": {"webhooks": [
        {"format": "slack", "url_env": "ARENA_SLACK_HOOK"},
        {"format": "telegram", "url_env": "ARENA_TG_TOKEN", "chat_id": "-100"},
        {"format": "json", "url_env": "ARENA_UNSET"}]}})
    env = {"ARENA_SLACK_HOOK": "https://hooks.slack.test/services/T0/B0/slacksecret1",
           "ARENA_TG_TOKEN": "4242:tg-secret-token", "ARENA_UNSET": ""}
    assert redact.named_env_values(settings, env) == [
        "https://hooks.slack.test/services/T0/B0/slacksecret1", "4242:tg-secret-token"]
    redact.register_configured(["sk-dummy"], settings, env)
    assert redact.redact("posted to https://hooks.slack.test/services/T0/B0/slacksecret1 "
                         "with bot4242:tg-secret-token and sk-dummy") == \
        "posted to *** with bot*** and ***"


def test_redact_value_walks_nested_bodies_and_keeps_other_types() -> None:
    key = UNREGISTERED["openai"]
    body = {"error": {"message": f"Incorrect API key provided: {key}", "code": 401,
                      "param": None, "list": [key, 1.5], "pair": (key, True)}}
    assert redact.redact_value(body) == {"error": {
        "message": "Incorrect API key provided: ***", "code": 401, "param": None,
        "list": ["***", 1.5], "pair": ("***", True)}}


def test_redact_value_returns_what_redacting_each_string_gives() -> None:
    """The joined-text shortcut against redacting every string on its own, on strings that put
    secrets and credential shapes at string edges, split them, or join them across two."""
    import random

    redact.register_secrets(["hunter2-registered-secret"])
    pieces = [*UNREGISTERED.values(), "hunter2-registered-secret", "Bearer", "Bearer ",
              "abcdefgh12345", "api_key=", "s3cr3t-value-123", "postgres://u:pw12345@db/x",
              "123456", ":AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "hunter2-", "registered-secret",
              "open_long", "BTCUSDT", "\n", " ", "", "é", "0" * 40, "deadbeef" * 5, "@host",
              "long prompt text, " * 40]  # strings of 512 characters or more are checked alone
    rng = random.Random(3)
    for _ in range(3000):
        strings = ["".join(rng.choices(pieces, k=rng.randint(0, 3)))
                   for _ in range(rng.randint(1, 4))]
        value = {"a": strings[0], "b": [*strings[1:], 7, None], "c": (strings[-1], 1.5)}
        assert redact.redact_value(value) == redact._redact_each(value), strings


def test_redact_value_hands_back_a_body_with_nothing_to_redact_untouched() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Decide now."}],
            "n": (1, 2.5), "id": "chatcmpl-8f14e45fceea167a5a36dedd4bea2543"}
    assert redact.redact_value(body) is body


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_log_lines_use_the_same_redactor(fmt: str) -> None:
    out = io.StringIO()
    arena_logging.configure("info", fmt, out)
    key = UNREGISTERED["anthropic"]
    structlog.get_logger("llm").warning("llm.failed", error=f"http 401: bad key {key}",
                                        headers={"authorization": "Bearer abcdefgh12345"})
    text = out.getvalue()
    assert key not in text and "abcdefgh12345" not in text
    assert "bad key ***" in text and "Bearer ***" in text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_control_characters_in_logged_values_are_escaped(fmt: str) -> None:
    out = io.StringIO()
    arena_logging.configure("info", fmt, out)
    structlog.get_logger("control").warning("control.refused", path="/static/\x00\x1b[31m\r\nX",
                                            note="tab\there")
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, the value's newline escaped
    assert not any(c in text for c in "\x00\x1b\r")
    if fmt == "json":
        line = json.loads(text)
        assert line["path"] == "/static/\x00\x1b[31m\r\nX"  # JSON's own escapes, lossless
        assert "\\u0000" in text
    else:
        assert "/static/\\x00\\x1b[31m\\r\\nX" in text and "tab\\there" in text
