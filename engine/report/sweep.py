"""The sweep report (Markdown, HTML, JSON): every window's result per variant, pooled per variant.

A run's result is its variant's return: the mean over the variant's traders of their return at
the run's last account snapshot (`return_pct`). Replicates of a (window, variant) are averaged.
Pooled per variant: the mean, the lowest and the highest return over the windows. P(A beats B) is
the share of the windows in which A's return was above B's (a tie counts half), over the windows
both ran. LLM cost is the sum of the runs' `decisions.cost_usd`; cache savings the sum of their
`llm_cache_hits.saved_usd`. Each run links to its own report (written by the run at its end).

The Probability of Backtest Overfitting across variants is `engine.paper.pbo`'s CSCV, as
`run.py backtest --windows N` computes it, with the sweep's windows as the submatrices: a run's
per-cycle returns are rebuilt from its traders' cycle snapshots (`account_snapshots`, cause
`cycle`, by run_id) as recovery does (`ReturnStats.series_from_equity`); a variant's return in a
cycle is the mean of its traders' returns in that cycle (and of its replicates'). It needs at
least 3 variants with returns in every window and an even number of windows, at least 4; the
report says so otherwise.
"""

from __future__ import annotations

import html
import itertools
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from engine.paper.pbo import described, pbo, withheld
from engine.paper.stats import ReturnStats


@dataclass(slots=True)
class RunResult:
    key: str
    variant: str
    window_start: float
    window_end: float
    replicate: int
    run_id: str | None
    return_pct: float | None
    traders: dict[str, float] = field(default_factory=dict)  # trader → return_pct
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    report: str | None = None  # the run's own HTML report
    # the variant's per-cycle returns: (cycle ts, mean of its traders' returns), oldest first;
    # left out of report.json
    cycle_returns: list[tuple[float, float]] = field(default_factory=list)


@dataclass(slots=True)
class SweepReport:
    sweep: str
    runs: list[RunResult]
    windows: list[str]
    variants: list[str]
    table: dict[str, dict[str, float | None]]  # window → variant → return_pct
    pooled: dict[str, dict[str, float | None]]  # variant → mean, min, max, windows
    beats: dict[str, dict[str, float | None]]  # a → b → P(a beats b) across windows
    cost_usd: float
    saved_usd: float
    pbo: float | None = None  # CSCV across variants (engine.paper.pbo); None: withheld
    pbo_combinations: int = 0
    pbo_note: str = ""  # the sentence the report shows: the PBO, or why it is withheld


async def load_sweep_report(conn: asyncpg.Connection, sweep: str) -> SweepReport:
    """Read every finished run of the sweep and compute the tables."""
    rows = await conn.fetch(
        "SELECT key, variant, window_start, window_end, replicate, run_id, run_dir "
        "FROM sweep_runs WHERE sweep = $1 AND status = 'done' "
        "ORDER BY window_start, variant, replicate", sweep)
    runs = [await _run_result(conn, r) for r in rows]
    return summarise(sweep, runs)


async def _run_result(conn: asyncpg.Connection, r: asyncpg.Record) -> RunResult:
    traders = {t["trader"]: t["return_pct"] for t in await conn.fetch(
        "SELECT DISTINCT ON (trader) trader, return_pct FROM account_snapshots "
        "WHERE run_id = $1 ORDER BY trader, id DESC", r["run_id"])}
    cost = await conn.fetchval(
        "SELECT coalesce(sum(cost_usd), 0) FROM decisions WHERE run_id = $1", r["run_id"])
    saved = await conn.fetchval(
        "SELECT coalesce(sum(saved_usd), 0) FROM llm_cache_hits WHERE run_id = $1", r["run_id"])
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for snap in await conn.fetch(
            "SELECT trader, ts, equity FROM account_snapshots WHERE run_id = $1 "
            "AND cause = 'cycle' ORDER BY id", r["run_id"]):
        points[snap["trader"]].append((snap["ts"].timestamp(), snap["equity"]))
    reports = _html_reports(r["run_dir"])
    return RunResult(
        key=r["key"], variant=r["variant"], window_start=r["window_start"].timestamp(),
        window_end=r["window_end"].timestamp(), replicate=r["replicate"],
        run_id=str(r["run_id"]) if r["run_id"] else None,
        return_pct=statistics.fmean(traders.values()) if traders else None, traders=traders,
        cost_usd=float(cost), saved_usd=float(saved),
        report=str(reports[-1]) if reports else None,
        cycle_returns=mean_per_cycle([
            ReturnStats.series_from_equity(p, len(p)) for p in points.values()]))


def mean_per_cycle(series: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Return the mean return per cycle time of several (ts, return) series, oldest first."""
    at: dict[float, list[float]] = defaultdict(list)
    for one in series:
        for ts, r in one:
            at[ts].append(r)
    return [(ts, statistics.fmean(at[ts])) for ts in sorted(at)]


def _html_reports(run_dir: str) -> list[Path]:
    return sorted(Path(run_dir).glob("*.html"))


def _label(start: float, end: float) -> str:
    from datetime import UTC, datetime

    def f(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M")

    return f"{f(start)}..{f(end)}"


def summarise(sweep: str, runs: list[RunResult]) -> SweepReport:
    """Compute the per-window table, the pooled results and P(A beats B) from the runs."""
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    windows: list[str] = []
    variants: list[str] = []
    for run in runs:
        w = _label(run.window_start, run.window_end)
        if w not in windows:
            windows.append(w)
        if run.variant not in variants:
            variants.append(run.variant)
        if run.return_pct is not None:
            cells[w][run.variant].append(run.return_pct)
    table = {w: {v: statistics.fmean(cells[w][v]) if cells[w][v] else None for v in variants}
             for w in windows}
    pooled: dict[str, dict[str, float | None]] = {}
    for v in variants:
        values = [x for x in (table[w][v] for w in windows) if x is not None]
        pooled[v] = {"mean": statistics.fmean(values) if values else None,
                     "min": min(values) if values else None,
                     "max": max(values) if values else None, "windows": float(len(values))}
    beats: dict[str, dict[str, float | None]] = {v: {} for v in variants}
    for a, b in itertools.permutations(variants, 2):
        both = [(x, y) for x, y in ((table[w][a], table[w][b]) for w in windows)
                if x is not None and y is not None]
        score = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in both)
        beats[a][b] = score / len(both) if both else None
    returns = pbo_inputs(runs)
    result = pbo(returns)
    usable = len(set.intersection(*(set(w) for w in returns))) if returns else 0
    return SweepReport(sweep, runs, windows, variants, table, pooled, beats,
                       cost_usd=sum(r.cost_usd for r in runs),
                       saved_usd=sum(r.saved_usd for r in runs),
                       pbo=result.pbo if result else None,
                       pbo_combinations=result.combinations if result else 0,
                       pbo_note=described(result, len(returns)) if result
                       else withheld(usable, len(returns)))


def pbo_inputs(runs: list[RunResult]) -> list[dict[str, list[float]]]:
    """Return, per window in time order, each variant's per-cycle returns (its replicates'
    mean per cycle): what `engine.paper.pbo.pbo` takes."""
    cells: dict[tuple[float, float], dict[str, list[list[tuple[float, float]]]]] = defaultdict(
        lambda: defaultdict(list))
    for run in runs:
        if run.cycle_returns:
            cells[(run.window_start, run.window_end)][run.variant].append(run.cycle_returns)
    return [{v: [r for _, r in mean_per_cycle(reps)] for v, reps in cells[w].items()}
            for w in sorted(cells)]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f} %"


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def render_markdown(r: SweepReport) -> str:
    """Return the report as Markdown."""
    out = [f"# Sweep {r.sweep}", "",
           f"{len(r.runs)} finished run(s): {len(r.windows)} window(s) x {len(r.variants)} "
           "variant(s). A run's result is the mean return of its variant's traders.", "",
           "## Return per window", "",
           "| window | " + " | ".join(r.variants) + " |",
           "|---|" + "---:|" * len(r.variants)]
    for w in r.windows:
        out.append(f"| {w} | " + " | ".join(_pct(r.table[w][v]) for v in r.variants) + " |")
    out += ["", "## Pooled per variant", "", "| variant | mean | lowest | highest | windows |",
            "|---|---:|---:|---:|---:|"]
    for v in r.variants:
        p = r.pooled[v]
        out.append(f"| {v} | {_pct(p['mean'])} | {_pct(p['min'])} | {_pct(p['max'])} | "
                   f"{int(p['windows'] or 0)} |")
    out += ["", "## P(row beats column) across windows", "",
            "Share of the windows in which the row's return was above the column's "
            "(a tie counts half).", "", "| | " + " | ".join(r.variants) + " |",
            "|---|" + "---:|" * len(r.variants)]
    for a in r.variants:
        out.append(f"| {a} | " + " | ".join("" if a == b else _p(r.beats[a].get(b))
                                             for b in r.variants) + " |")
    out += ["", "## LLM cost", "", f"Spent {r.cost_usd:.4f} USD on LLM calls; the answer cache "
            f"saved {r.saved_usd:.4f} USD.", "",
            "## Probability of backtest overfitting (CSCV)", "",
            "Across the variants, with the windows as the submatrices; a variant's return in a "
            "cycle is the mean of its traders' (and replicates') returns.", "", r.pbo_note, "",
            "## Runs", "", "| window | variant | replicate | return | run | report |",
            "|---|---|---:|---:|---|---|"]
    for run in r.runs:
        link = f"[report]({run.report})" if run.report else "-"
        out.append(f"| {_label(run.window_start, run.window_end)} | {run.variant} | "
                   f"{run.replicate + 1} | {_pct(run.return_pct)} | {run.run_id or '-'} | "
                   f"{link} |")
    return "\n".join(out) + "\n"


def render_html(r: SweepReport) -> str:
    """Return the report as a standalone HTML page (its Markdown tables as HTML tables)."""
    body: list[str] = []
    rows: list[list[str]] = []
    for line in render_markdown(r).splitlines():
        if line.startswith("|"):
            if not line.startswith("|---"):
                rows.append([c.strip() for c in line.strip("|").split("|")])
            continue
        if rows:
            body.append(_table(rows))
            rows = []
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    if rows:
        body.append(_table(rows))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Sweep "
            f"{html.escape(r.sweep)}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:right}"
            "</style></head><body>" + "\n".join(body) + "</body></html>\n")


def _cell(text: str) -> str:
    if text.startswith("[report](") and text.endswith(")"):
        href = html.escape(text[len("[report]("):-1], quote=True)
        return f"<a href='file://{href}'>report</a>"
    return html.escape(text)


def _table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>"
                   for row in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def render_json(r: SweepReport) -> bytes:
    """Return the report as JSON."""
    data: dict[str, Any] = asdict(r)
    for run in data["runs"]:
        del run["cycle_returns"]
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


async def write_sweep_report(conn: asyncpg.Connection, sweep: str,
                             directory: Path) -> list[Path]:
    """Write report.md, report.html and report.json of the sweep into `directory`."""
    return write_files(await load_sweep_report(conn, sweep), directory)


def write_files(report: SweepReport, directory: Path) -> list[Path]:
    """Write report.md, report.html and report.json into `directory`; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "report.md", directory / "report.html", directory / "report.json"]
    paths[0].write_text(render_markdown(report), encoding="utf-8")
    paths[1].write_text(render_html(report), encoding="utf-8")
    paths[2].write_bytes(render_json(report))
    return paths
