"""The subcommands: `run.py report` (a run's report) and `run.py db` (a way into the data)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

from engine.settings import Secrets, SettingsError, load_settings


def _settings(config: str | None) -> tuple[Any, Secrets] | None:
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        print(f"settings error: {exc}", file=sys.stderr)
        return None
    secrets = Secrets.from_env()
    from engine import logging as arena_logging
    from engine import redact

    # Logs go to stderr: stdout carries the command's own output.
    arena_logging.configure("warning", "console", stream=sys.stderr)
    redact.register_configured(secrets.values(), settings, os.environ)  # + *_env settings
    return settings, secrets


async def _open(settings: Any, secrets: Secrets) -> Any:
    from engine.store.database import Database, migrate

    db = await Database.open(settings.database, secrets)
    await migrate(db.dsn)
    return db


# ---------------------------------------------------------------- report


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py report",
                                description="Write a run's report (Markdown, HTML, JSON).")
    p.add_argument("--config", metavar="PATH", help="settings file (default: ./settings.toml)")
    p.add_argument("--run", default="latest", metavar="ID|latest",
                   help="the run: its run_id (or a unique prefix), or latest (default)")
    p.add_argument("--out", metavar="DIR", help="directory for the files (default: [report] dir)")
    return p


def report_main(argv: list[str]) -> int:
    """Write the report of one run and print its paths and final table."""
    args = report_parser().parse_args(argv)
    loaded = _settings(args.config)
    if loaded is None:
        return 2
    settings, secrets = loaded
    from engine.report.data import RunNotFound
    from engine.report.files import print_table, write_report

    async def main() -> int:
        db = await _open(settings, secrets)
        try:
            from engine.store.database import query_session

            report = await write_report(db.dsn, args.out or settings.report.dir, args.run,
                                        min_returns=settings.leaderboard.min_returns,
                                        session=query_session(settings.database),
                                        min_coverage=settings.leaderboard.min_coverage)
        except RunNotFound as exc:
            print(f"report error: {exc}", file=sys.stderr)
            return 1
        finally:
            await db.close()
        print_table(report.figures)
        print(f"report: {report.markdown}\nreport: {report.html}")
        return 0

    return asyncio.run(main())


# ---------------------------------------------------------------- db


def db_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py db",
        description="Print a connection URL of the engine's database and keep it up until Ctrl-C "
                    "(opens psql when installed), or run one query.")
    p.add_argument("--config", metavar="PATH", help="settings file (default: ./settings.toml)")
    p.add_argument("--query", metavar="SQL", help="run this SQL and print the result as a table")
    p.add_argument("--no-psql", action="store_true", help="do not open psql even if installed")
    p.add_argument("--quarantine", metavar="ID",
                   help="quarantine the row the database refuses (its id, from the "
                        "writer.row_refused log line): the writer takes it out and goes on")
    return p


def print_rows(rows: list[Any], *, file: Any = None) -> None:
    """Print query rows as a table (every value as text, NULL as an empty cell), each cell
    redacted (`engine.redact`): a second line of defence, should a secret ever reach a row."""
    from rich.console import Console
    from rich.table import Table

    from engine.redact import redact

    console = Console(file=file, width=max(shutil.get_terminal_size().columns, 200))
    if not rows:
        console.print("(0 rows)")
        return
    table = Table(show_lines=False)
    for name in rows[0].keys():
        table.add_column(redact(name), overflow="fold")
    for r in rows:
        table.add_row(*("" if v is None else redact(str(v)) for v in r.values()))
    console.print(table)
    console.print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


async def query(dsn: str, sql: str, session: dict[str, str] | None = None) -> list[Any]:
    """Run `sql` read-only and return its rows (`session`: server settings, its timeout)."""
    import asyncpg

    conn = await asyncpg.connect(dsn, server_settings=session or {})
    try:
        async with conn.transaction(readonly=True):
            return list(await conn.fetch(sql))
    finally:
        await conn.close()


def db_main(argv: list[str]) -> int:
    """Serve the database until Ctrl-C (or psql exits), or run one query."""
    args = db_parser().parse_args(argv)
    loaded = _settings(args.config)
    if loaded is None:
        return 2
    settings, secrets = loaded
    from engine import redact

    async def main() -> int:
        db = await _open(settings, secrets)
        try:
            if args.quarantine is not None:
                return await _quarantine(db.dsn, args.quarantine)
            if args.query is not None:
                from engine.store.database import query_session

                try:
                    rows = await query(db.dsn, args.query, query_session(settings.database))
                except Exception as exc:  # asyncpg's errors: one line, exit 1
                    print(redact.redact(f"query error: {type(exc).__name__}: {exc}"),
                          file=sys.stderr)
                    return 1
                print_rows(rows)
                return 0
            return await _serve(db, use_psql=not args.no_psql)
        finally:
            await db.close()

    return asyncio.run(main())


async def _quarantine(dsn: str, row_id: str) -> int:
    """Mark a refused row quarantined; print what happened (exit 1 when no such row)."""
    from engine.store.quarantine import quarantine

    try:
        print(await quarantine(dsn, row_id))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def shown_url(dsn: str, *, embedded: bool) -> str:
    """Return the URL to print: the embedded server's as is; DATABASE_URL's without password."""
    if embedded:
        return dsn
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username}:***@{host}")
    return urlunsplit(parts)


async def _serve(db: Any, *, use_psql: bool) -> int:
    print(shown_url(db.dsn, embedded=db.embedded), flush=True)
    loop = asyncio.get_running_loop()
    psql = shutil.which("psql") if use_psql else None
    if psql and sys.stdin.isatty():
        print("opening psql; the database stays up until it exits", file=sys.stderr)
        # Ctrl-C belongs to psql (it cancels a query) while it runs, not to this command.
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        proc = await asyncio.to_thread(subprocess.run, [psql, db.dsn], env=os.environ.copy())
        return proc.returncode
    print("the database is up at that URL until Ctrl-C", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    return 0
