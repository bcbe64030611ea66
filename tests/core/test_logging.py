"""Logs: one JSON object per line with timestamp, level, event, component, cycle_id; no secrets."""

from __future__ import annotations

import io
import json

import structlog

from engine import logging as arena_logging


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


def test_secrets_never_reach_a_line_whatever_field_they_hide_in() -> None:
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
