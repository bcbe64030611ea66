"""Checks of what a user can get wrong, made in well under a second, before any heavy work.

Each failure is a `UserError` whose message names the problem and the fix in one line; the command
line prints it on stderr and exits with code 2 (no traceback, no `engine.crashed`). Checked, in
order: the strategies and their parameters (as settings errors naming the file), the `--replay`
file (exists, readable to its end, starts with a recorded frame), the directories the engine
writes to, the control API's port, and `DATABASE_URL` (one connection attempt).
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import os
import socket
import tempfile
import zlib
from pathlib import Path
from typing import Any

import orjson

from engine.app.options import Options
from engine.settings import Secrets, Settings, SettingsError

# recording.KINDS (not imported: heavy)
KINDS = ("raw", "backfill", "llm", "cycle", "batch", "pace", "halt")
DB_CHECK_TIMEOUT_S = 3.0  # a DATABASE_URL that does not answer within this is unreachable
EXCHANGE_CHECK_TIMEOUT_S = 3.0  # Binance's REST host not connected within this is unreachable


class UserError(Exception):
    """Something the user can fix; the message is the one line shown."""


def check_strategies(settings: Settings, path: str | Path) -> None:
    """Build every enabled rule-based strategy once (they are pure), so a bad one fails now."""
    from strategies.base import registered

    rules = registered()
    for trader in settings.traders:
        if not trader.enabled or trader.strategy == "llm":
            continue
        factory = rules.get(trader.strategy)
        if factory is None:
            known = ", ".join(["llm", *sorted(rules)])
            raise SettingsError(f"{path}: trader {trader.name!r}: unknown strategy "
                                f"{trader.strategy!r}; expected one of {known}")
        try:
            factory(trader, settings)
        except SettingsError as exc:
            raise SettingsError(f"{path}: {exc}") from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise SettingsError(f"{path}: bad value in 'traders.{trader.name}.params' "
                                f"{dict(trader.params)!r}: {exc}") from None


def _ends(path: str) -> tuple[bytes, bytes]:
    """Read the whole file (a gzip stream to its end, so its CRC and length are checked);
    return its first line and its last non-empty line."""
    opener = gzip.open if path.endswith(".gz") else open
    first, tail = b"", b""
    with opener(path, "rb") as fh:
        first = fh.readline(1 << 20)
        tail = first
        while chunk := fh.read(1 << 20):
            tail = (tail + chunk)[-(1 << 20):]
    lines = [line for line in tail.splitlines() if line.strip()]
    return first, lines[-1] if lines else b""


def check_models(settings: Settings, path: str | Path) -> None:
    """Refuse an enabled LLM trader whose model has no entry in [llm.prices] (unknown, or its
    cost would count as 0)."""
    for trader in settings.traders:
        if trader.enabled and trader.strategy == "llm" and trader.model not in settings.llm.prices:
            raise SettingsError(
                f"{path}: trader {trader.name!r}: unknown model {trader.model!r} (no entry in "
                f"[llm.prices]); fix the name or add [llm.prices.\"{trader.model}\"] with input "
                "and output in USD per million tokens")


def check_replay(path: str) -> float | None:
    """Refuse a missing, unreadable, corrupt or truncated recording (read to its end: a gzip
    stream broken anywhere fails here, before anything starts; its first line must be a frame);
    return the time of its last line (None when that line is unreadable)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--replay {path}: no such file; record one with --record FILE, or use "
                        "--replay tests/data/sample.jsonl.gz")
    try:
        first, last = _ends(path)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"--replay {path}: cannot read it, corrupt or truncated "
                        f"({type(exc).__name__}: {exc}); "
                        "nothing was started; record it again with --record FILE") from None
    try:
        record = orjson.loads(first)
        float(record["t"])
        if not any(kind in record for kind in KINDS):
            raise KeyError("raw")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UserError(f"--replay {path}: not a recording (the first line is not "
                        '{"t": ..., "raw": ...}); record one with --record FILE') from None
    try:
        return float(orjson.loads(last)["t"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def check_writable(directory: str | Path, what: str) -> None:
    """Refuse a directory the engine cannot create or write a file in."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".arena-write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"{what} {str(d)!r} is not writable ({exc.strerror or exc}); "
                        "fix its permissions or point the setting elsewhere") from None


def check_port(host: str, port: int) -> None:
    """Refuse a control port another process already listens on."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if os.name == "posix":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"control port {port} on {host} is already in use; stop the "
                                "other process or set [control] port (0 picks a free one)") \
                    from None
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                            "check [control] host and port") from None


async def check_database(dsn: str, timeout: float = DB_CHECK_TIMEOUT_S) -> None:
    """Refuse a DATABASE_URL that cannot be connected to (unreachable, refused, bad login)."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise UserError(f"DATABASE_URL is unreachable ({type(exc).__name__}: {exc}); start "
                        "the database, fix the URL, or unset it to use the embedded one") \
            from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise UserError(f"DATABASE_URL refused the connection ({type(exc).__name__}: {exc}); "
                        "check the user, password and database name") from None
    await conn.close()


def check_local(settings: Settings, secrets: Secrets, options: Any, config: str | Path) -> None:
    """Run every check but the database's; raise SettingsError or UserError on the first."""
    check_strategies(settings, config)
    check_models(settings, config)
    if options.replay:
        check_replay(options.replay)
        if getattr(options, "resume", False) and getattr(options, "fresh", False):
            raise UserError("--resume and --fresh exclude each other")
    elif getattr(options, "resume", False):
        raise UserError("--resume continues a replay's arena (--replay FILE --resume); a live "
                        "run resumes by default")
    dry_run = options.dry_run or settings.engine.dry_run
    if options.record:
        check_writable(Path(options.record).resolve().parent, "--record directory")
    if options.record_llm:
        check_writable(options.record_llm, "--record-llm directory")
    if not dry_run:
        check_writable(Path(settings.database.spill_path).resolve().parent,
                       "database.spill_path directory")
        if not secrets.database_url:
            check_writable(settings.database.embedded_dir, "database.embedded_dir")
    if settings.control.enabled and not options.once:
        check_port(settings.control.host, settings.control.port)


async def check_remote(settings: Settings, secrets: Secrets, options: Options) -> None:
    """Check DATABASE_URL (when one is set and the run writes to it) and, beside it, Binance
    (a live run): unreachable, one warning line with the offline command; reachable, a symbol
    its exchangeInfo does not list is refused."""

    import structlog

    async def nothing() -> None:
        return None

    writes = not (options.dry_run or settings.engine.dry_run)
    db_error, warning = await asyncio.gather(
        check_database(secrets.database_url) if secrets.database_url and writes else nothing(),
        nothing() if options.replay else check_exchange(settings), return_exceptions=True)
    # The database's refusal first; a warning only once nothing stops the start.
    for outcome in (db_error, warning):
        if isinstance(outcome, BaseException):
            raise outcome
    if isinstance(warning, tuple):
        event, fields = warning
        structlog.get_logger("feed").warning(event, **fields)


Warning = tuple[str, dict[str, Any]]  # a log event and its fields, logged by check_remote


async def check_exchange(settings: Settings,
                         timeout: float = EXCHANGE_CHECK_TIMEOUT_S) -> Warning | None:
    """Refuse a configured symbol Binance's exchangeInfo does not list; return the one-line
    warning to log when Binance cannot be reached (with the offline command) or cannot say."""
    import asyncio

    from engine.clock import LiveClock
    from engine.market.binance import BinanceRest, RestError
    from engine.market.reach import offline_command, unreachable

    feed = settings.feed
    why = await unreachable(feed.rest_url, timeout)
    if why is not None:
        return "feed.unreachable", {
            "url": feed.rest_url, "error": why,
            "hint": f"Binance is unreachable: no prices will arrive; offline, run "
                    f"`{offline_command()}`"}
    rest = BinanceRest(feed, LiveClock(), max_retries=0)
    try:
        async with asyncio.timeout(timeout + 2):
            info = await rest.get("exchangeInfo", {}, 1 if feed.market == "futures" else 20)
        listed = {e.get("symbol") for e in info.get("symbols", ()) if isinstance(e, dict)}
    except (RestError, TimeoutError, OSError, AttributeError) as exc:
        return "feed.symbols_unchecked", {
            "url": feed.rest_url, "error": f"{type(exc).__name__}: {exc}",
            "detail": "exchangeInfo did not answer: the symbols were not checked"}
    finally:
        await rest.close()
    unknown = [s for s in feed.symbols if s not in listed]
    if unknown:
        raise UserError(f"unknown symbol {', '.join(unknown)}: not listed by {feed.rest_url} "
                        f"(exchangeInfo, {feed.market}); fix [feed] symbols")
    return None
