"""Structured logs: one JSON object per line on stdout, or a readable console format.

Every line has an ISO-8601 UTC `timestamp`, `level`, `event` and `component`; lines logged inside
a trading cycle carry its `cycle_id` (bound through contextvars). Exceptions become structured
fields. Every registered secret is replaced by `***` before a line is written, whatever field it
hides in.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import orjson
import structlog

_secrets: list[str] = []


def register_secrets(values: Iterable[str]) -> None:
    """Add values that must never appear in a log line."""
    for v in values:
        if v and len(v) >= 4 and v not in _secrets:
            _secrets.append(v)
    _secrets.sort(key=len, reverse=True)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        for s in _secrets:
            if s in value:
                value = value.replace(s, "***")
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    if not _secrets:
        return event_dict
    return {k: _redact_value(v) for k, v in event_dict.items()}


def _component(logger: Any, _: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    if "component" not in event_dict:
        name = getattr(logger, "name", None) or event_dict.pop("logger", None)
        event_dict["component"] = name or "engine"
    event_dict.pop("logger", None)
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for the whole process; `fmt` is json, console or auto (TTY → console)."""
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        _component,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        renderer: list[Any] = [
            structlog.processors.dict_tracebacks,
            _redact,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
    else:
        renderer = [
            _redact,
            structlog.dev.ConsoleRenderer(colors=stream.isatty()),
        ]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_NamedLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


class _NamedLogger(structlog.PrintLogger):
    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


class _NamedLoggerFactory:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, *args: Any) -> _NamedLogger:
        return _NamedLogger(self._stream, args[0] if args else None)


def console_mode() -> bool:
    """Return True when logs are rendered for a person at a terminal."""
    procs = structlog.get_config()["processors"]
    return any(isinstance(p, structlog.dev.ConsoleRenderer) for p in procs)
