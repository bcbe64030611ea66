"""Structured logs: one JSON object per line on stdout, or a readable console format.

Every line has an ISO-8601 UTC `timestamp`, `level`, `event` and `component`; lines logged inside
a trading cycle carry its `cycle_id` (bound through contextvars). Exceptions become structured
fields (without local variables). Secrets never reach the stream: `engine.redact` (every
registered secret, and whatever is shaped like an API key or a bearer token) runs on the *final
rendered line*, after the JSON or console renderer has drawn it, so a secret hidden in a
traceback, in an exception passed as a field, in bytes or in a nested dict is caught too. Records
of the standard `logging` module (asyncio, aiohttp, libraries) go through the same renderers and
the same redaction. Control characters in logged values never land raw: JSON escapes them
(`\u0000`), the console format writes them as `\x00`, `\n`, `\t` and so on.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer

from engine import redact as _redact

# One redactor for logs and everything else (engine.redact); re-exported for the callers here.
REDACTED = _redact.REDACTED
register_secrets = _redact.register_secrets
clear_secrets = _redact.clear_secrets
redact = _redact.redact
redact_bytes = _redact.redact_bytes
# Control characters in a logged value are shown escaped, never raw: a NUL, an escape sequence or
# a newline from a request path cannot corrupt or forge a console line.
_CONTROLS = {i: f"\\x{i:02x}" for i in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})
_RAW_KEYS = frozenset({"exception", "exc_info", "stack", "timestamp", "level"})


def escape_controls(text: str) -> str:
    """Return `text` with control characters (C0, DEL, C1) written as escapes."""
    return text.translate(_CONTROLS) if not text.isprintable() else text


def _escape_values(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Escape control characters in the string values of a console line (JSON escapes its own)."""
    for key, value in event_dict.items():
        if isinstance(value, str) and key not in _RAW_KEYS:
            event_dict[key] = escape_controls(value)
    return event_dict


def _redact_rendered(_: Any, __: str, rendered: Any) -> Any:
    """The last processor: redact the line exactly as it will be written."""
    if isinstance(rendered, str):
        return redact(rendered)
    if isinstance(rendered, bytes):
        return redact_bytes(rendered)
    return rendered


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
        # No local variables in tracebacks: they are long, and may hold a secret cut short.
        tracebacks = structlog.processors.ExceptionRenderer(
            ExceptionDictTransformer(show_locals=False))
        renderer: list[Any] = [tracebacks,
                               structlog.processors.JSONRenderer(serializer=_orjson_dumps)]
    else:
        renderer = [_escape_values, structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback)]
    renderer.append(_redact_rendered)
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_NamedLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(shared, renderer, stream, numeric)


def _route_stdlib(shared: list[Any], renderer: list[Any], stream: TextIO, level: int) -> None:
    """Render records of the standard `logging` module like ours, redaction included."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[p for p in shared if p is not structlog.stdlib.add_logger_name]
        + [_stdlib_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    ))
    handler._arena = True  # type: ignore[attr-defined]  # ours: replaced on the next configure()
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_arena", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(level, logging.INFO))
    for name in CHATTY:
        chatty = logging.getLogger(name)
        for f in [f for f in chatty.filters if isinstance(f, _DebugLevel)]:
            chatty.removeFilter(f)
        chatty.addFilter(_DebugLevel(level <= logging.DEBUG))


# Libraries whose info lines are start-up chatter (pgserver's initdb and pg_ctl output): shown
# at debug level only; their warnings and errors stay as they are.
CHATTY = ("pgserver",)


class _DebugLevel(logging.Filter):
    """Demote a logger's records below WARNING to DEBUG (dropped unless debug is on)."""

    def __init__(self, show: bool) -> None:
        super().__init__()
        self.show = show

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.show


def _stdlib_name(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    record = event_dict.get("_record")
    if "component" not in event_dict or event_dict["component"] == "engine":
        event_dict["component"] = record.name if record is not None else "python"
    return event_dict


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
