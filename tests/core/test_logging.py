"""Logs: one JSON object per line with timestamp, level, event, component, cycle_id; no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import openai
import pytest
import structlog
from aioresponses import aioresponses

from engine import logging as arena_logging
from engine.settings import Secrets

KEYS = {
    "ANTHROPIC_API_KEY": "sk-ant-api03-Anthr0picSecretKey",
    "OPENAI_API_KEY": "sk-proj-0penaiSecretKey42",
    "DEEPSEEK_API_KEY": "sk-deepseekSecretKey77",
    "DATABASE_URL": "postgresql://arena:pg%40Passw0rd!@db.internal:5432/arena",
    "ARENA_CONTROL_TOKEN": "ctl-token-SecretValue",
}
SECRETS = Secrets.from_env(KEYS)
# Fragments no line may hold: every secret, and the password inside DATABASE_URL on its own.
FRAGMENTS = [*KEYS.values(), "pg%40Passw0rd!", "Anthr0picSecret", "0penaiSecret",
             "deepseekSecret", "SecretValue"]


@pytest.fixture(autouse=True)
def _no_secrets_left() -> Iterator[None]:
    arena_logging.clear_secrets()
    yield
    arena_logging.clear_secrets()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_standard_fields() -> None:
    out = io.StringIO()
    arena_logging.configure("info", "json", out)
    structlog.get_logger("feed").info("feed.reconnected", gap_s=4.2)
    (line,) = lines(out)
    assert line["event"] == "feed.reconnected" and line["gap_s"] == 4.2
    assert line["level"] == "info" and line["component"] == "feed"
    assert line["timestamp"].endswith("Z")


def test_lines_inside_a_cycle_carry_its_id() -> None:
    out = io.StringIO()
    arena_logging.configure("info", "json", out)
    log = structlog.get_logger("cycle")
    with structlog.contextvars.bound_contextvars(cycle_id="c-1"):
        log.info("inside")
    log.info("outside")
    inside, outside = lines(out)
    assert inside["cycle_id"] == "c-1" and "cycle_id" not in outside


def test_exceptions_become_structured_fields() -> None:
    out = io.StringIO()
    arena_logging.configure("info", "json", out)
    try:
        raise ValueError("bad frame")
    except ValueError:
        structlog.get_logger("feed").exception("feed.crashed")
    (line,) = lines(out)
    exc = line["exception"][0]
    assert exc["exc_type"] == "ValueError" and exc["exc_value"] == "bad frame"


def test_level_filter_drops_debug() -> None:
    out = io.StringIO()
    arena_logging.configure("warning", "json", out)
    structlog.get_logger("x").info("quiet")
    structlog.get_logger("x").warning("loud")
    assert [line["event"] for line in lines(out)] == ["loud"]


def test_registered_secrets_never_reach_a_line_whatever_field_they_hide_in() -> None:
    out = io.StringIO()
    arena_logging.configure("info", "json", out)
    arena_logging.register_secrets(["sk-ant-TOPSECRET", "pgpassw0rd"])
    log = structlog.get_logger("llm")
    log.info("llm.request", headers={"x-api-key": "sk-ant-TOPSECRET"})
    log.info("store.connect", dsn="postgresql://arena:pgpassw0rd@db/arena")
    try:
        raise RuntimeError("auth failed for sk-ant-TOPSECRET")
    except RuntimeError:
        log.exception("llm.failed")
    text = out.getvalue()
    assert "TOPSECRET" not in text and "pgpassw0rd" not in text
    assert text.count("***") >= 3


def test_console_format_for_people() -> None:
    out = io.StringIO()
    arena_logging.configure("info", "console", out)
    structlog.get_logger("x").info("cycle.finished", fills=2)
    assert "cycle.finished" in out.getvalue() and "fills=2" in out.getvalue()
    assert arena_logging.console_mode()


def _leaks(text: str) -> list[str]:
    return [f for f in FRAGMENTS if f in text]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_secret_in_any_mode_exceptions_fields_nested_dicts_and_bytes(fmt: str) -> None:
    out = io.StringIO()
    arena_logging.configure("info", fmt, out)
    arena_logging.register_secrets(SECRETS.values())
    log = structlog.get_logger("llm")
    for value in KEYS.values():
        try:
            raise RuntimeError(f"auth failed for {value}")
        except RuntimeError as exc:
            log.exception("llm.failed")  # the traceback, rendered by either renderer
            log.error("llm.failed_field", error=exc)  # the exception object as a field
            log.error("llm.failed_repr", error=repr(exc), args=exc.args)
        log.info("llm.request", headers={"outer": {"x-api-key": value, "list": [value]}})
        log.info("llm.raw", body=value.encode(), pair=(1, value.encode()))
    log.info("store.connect", dsn=KEYS["DATABASE_URL"], password="pg%40Passw0rd!")
    text = out.getvalue()
    assert _leaks(text) == []
    assert text.count("***") >= 6 * len(KEYS)
    assert "llm.failed_field" in text and "RuntimeError" in text  # the line itself survives


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_provider_401_that_echoes_the_api_key_is_logged_without_it(fmt: str) -> None:
    out = io.StringIO()
    arena_logging.configure("info", fmt, out)
    arena_logging.register_secrets(SECRETS.values())
    key = KEYS["OPENAI_API_KEY"]
    body = {"error": {"message": f"Incorrect API key provided: {key}. You can find your API "
                                 "key at https://platform.openai.com/account/api-keys.",
                      "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}

    async def call() -> None:
        client = openai.AsyncOpenAI(api_key=key, base_url="https://api.openai.com/v1",
                                    http_client=openai.DefaultAioHttpClient(), max_retries=0)
        try:
            with aioresponses() as mocked:
                mocked.post("https://api.openai.com/v1/chat/completions", status=401,
                            payload=body)
                await client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        finally:
            await client.close()

    import asyncio

    with pytest.raises(openai.AuthenticationError) as info:
        asyncio.run(call())
    assert key in str(info.value)  # the SDK's error does hold the key
    log = structlog.get_logger("llm")
    try:
        raise info.value
    except openai.AuthenticationError as exc:
        log.exception("llm.failed", error=exc, body=exc.body, response=exc.response.text)
    text = out.getvalue()
    assert _leaks(text) == []
    assert "invalid_api_key" in text and "***" in text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_standard_logging_records_are_rendered_and_redacted_too(fmt: str) -> None:
    out = io.StringIO()
    arena_logging.configure("info", fmt, out)
    arena_logging.register_secrets(SECRETS.values())
    try:
        raise ConnectionError(f"refused for {KEYS['DATABASE_URL']}")
    except ConnectionError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    text = out.getvalue()
    assert "Task exception was never retrieved" in text and "ConnectionError" in text
    assert _leaks(text) == []
    if fmt == "json":
        (line,) = lines(out)
        assert line["component"] == "asyncio" and line["level"] == "error"


def test_json_tracebacks_carry_no_local_variables() -> None:
    out = io.StringIO()
    arena_logging.configure("info", "json", out)
    api_key = "sk-a-local-that-a-truncated-dump-would-cut-" + "x" * 100  # noqa: F841
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("x").exception("failed")
    (line,) = lines(out)
    assert all("locals" not in frame for frame in line["exception"][0]["frames"])
    assert "sk-a-local" not in out.getvalue()


def test_redact_covers_text_and_bytes_answers() -> None:
    arena_logging.register_secrets(SECRETS.values())
    token = KEYS["ARENA_CONTROL_TOKEN"]
    assert arena_logging.redact(f"bad {token}!") == "bad ***!"
    assert arena_logging.redact_bytes(json.dumps({"m": token}).encode()) == b'{"m": "***"}'


def test_pgserver_start_up_chatter_shows_only_at_debug_but_its_errors_always() -> None:
    pg = logging.getLogger("pgserver")
    out = io.StringIO()
    arena_logging.configure("info", "json", out)
    pg.info("running pg_ctl... pg_ctl_args=['start']")
    pg.error("Failed to start server.")
    (line,) = lines(out)
    assert (line["event"], line["level"], line["component"]) == (
        "Failed to start server.", "error", "pgserver")
    debug = io.StringIO()
    arena_logging.configure("debug", "json", debug)
    pg.info("running pg_ctl... pg_ctl_args=['start']")
    (shown,) = lines(debug)
    assert shown["level"] == "debug" and shown["event"].startswith("running pg_ctl")
    assert len(pg.filters) == 1  # configure() replaces its filter, never stacks them
