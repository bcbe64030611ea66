"""Write a run's report: read its rows, compute its figures, save Markdown, HTML and JSON."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from engine.report.data import load_run
from engine.report.figures import RunFigures, compute
from engine.report.intervals import annotate
from engine.report.render import html, markdown, tables


@dataclass(frozen=True, slots=True)
class Report:
    """A written report: its files and the figures in them."""

    markdown: Path
    html: Path
    json: Path
    figures: RunFigures


async def run_figures(dsn: str, run: str = "latest", *, min_returns: int = 2,
                      session: dict[str, str] | None = None,
                      min_coverage: float = 0.95) -> RunFigures:
    """Return the figures of one run (`latest`, or a run id or a unique prefix of one).

    `session`: the connection's server settings (engine.store.database.query_session: its
    statement timeout)."""
    conn = await asyncpg.connect(dsn, server_settings=session or {})
    try:
        rows = await load_run(conn, run)
    finally:
        await conn.close()
    figures = compute(rows)
    annotate(figures, min_returns=min_returns, min_coverage=min_coverage)
    return figures


def _stem(f: RunFigures) -> str:
    """Name a run's files by its start and its id's first 13 characters: a UUIDv7's whole
    millisecond timestamp, so two runs of one window (the same simulated start) do not share a
    name, and still a prefix `run.py report --run` takes."""
    started = datetime.fromtimestamp(f.started_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"run-{started}-{str(f.run['run_id'])[:13]}"


def as_json(f: RunFigures) -> bytes:
    """Return the figures as JSON (what the Markdown and HTML show, unrounded)."""
    data: dict[str, Any] = {
        "run": f.run, "started_at": f.started_at, "ended_at": f.ended_at,
        "duration_s": f.duration_s, "cycles": f.cycles, "cycles_ok": f.cycles_ok,
        "traders": [dataclasses.asdict(t) for t in f.traders],
    }
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
                        | orjson.OPT_SERIALIZE_NUMPY, default=_plain)


def _plain(value: Any) -> Any:
    """Return a numpy scalar as the number it is (never its string); anything else as text."""
    item = getattr(value, "item", None)
    if item is not None:
        return item()
    return str(value)


async def write_report(dsn: str, out_dir: str | Path, run: str = "latest", *,
                       min_returns: int = 2, session: dict[str, str] | None = None,
                       min_coverage: float = 0.95) -> Report:
    """Write `<out_dir>/run-<start>-<id>.{md,html,json}` for the run and return them.

    `min_returns`: the fewest per-cycle returns for Sharpe, Sortino and CIs (leaderboard setting).
    """
    figures = await run_figures(dsn, run, min_returns=min_returns, session=session,
                                min_coverage=min_coverage)
    return await asyncio.to_thread(save, figures, Path(out_dir))


def save(figures: RunFigures, out: Path) -> Report:
    """Write the figures' Markdown, HTML and JSON files into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / _stem(figures)
    md, page, js = stem.with_suffix(".md"), stem.with_suffix(".html"), stem.with_suffix(".json")
    md.write_text(markdown(figures), encoding="utf-8")
    page.write_text(html(figures), encoding="utf-8")
    js.write_bytes(as_json(figures))
    return Report(md.resolve(), page.resolve(), js.resolve(), figures)


def print_table(figures: RunFigures, *, file: Any = None) -> None:
    """Print the final leaderboard as a rich table (to stdout unless `file`)."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console(file=file, width=200)
    board = tables(figures)[0]
    table = RichTable(title=f"Run {figures.run['run_id']} (final)", title_justify="left")
    for i, header in enumerate(board.headers):
        table.add_column(header, justify="left" if i in (1, 2) else "right")
    for row in board.rows:
        table.add_row(*row)
    console.print(table)


async def report_on_exit(dsn: str, settings: Any, run_id: str, *,
                         console: bool) -> Report | None:
    """Write the ending run's report, log `report.written` and print its table and paths.

    `settings`: the engine's `Settings` (its `[report]` directory and `leaderboard.min_returns`).

    In console mode the table and the paths are printed on stdout; in JSON log mode the output
    keeps only JSON lines: the `report.written` line carries the paths. A failure is logged and
    never changes the exit code. Return the report written (None when it failed).
    """
    import structlog

    log = structlog.get_logger("report")
    try:
        from engine.store.database import query_session

        report = await write_report(dsn, settings.report.dir, run_id,
                                    min_returns=settings.leaderboard.min_returns,
                                    session=query_session(settings.database),
                                    min_coverage=settings.leaderboard.min_coverage)
    except Exception as exc:  # isolation boundary: a failed report never fails the run
        log.error("report.failed", run_id=run_id, error=f"{type(exc).__name__}: {exc}")
        return None
    log.info("report.written", run_id=run_id, markdown=str(report.markdown),
             html=str(report.html), json=str(report.json))
    if console:
        print_table(report.figures)
        print(f"report: {report.markdown}\nreport: {report.html}", flush=True)
    return report
