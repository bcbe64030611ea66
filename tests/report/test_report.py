"""The run report of a replay of the sample: files, figures equal to the database's, browser."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.report.conftest import Replayed
from tests.support.live_engine import SAMPLE
from tests.support.page import launched_chromium, requires_chromium


def _written(replayed: Replayed) -> dict[str, Any]:
    lines = [json.loads(x) for x in replayed.output.splitlines() if x.startswith("{")]
    written = [x for x in lines if x.get("event") == "report.written"]
    assert len(written) == 1, replayed.output[-3000:]
    return written[0]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _figures(replayed: Replayed) -> dict[str, Any]:
    return json.loads(Path(_written(replayed)["json"]).read_text())


def test_the_replay_ends_by_writing_a_report_and_printing_its_path(replayed: Replayed) -> None:
    assert replayed.returncode == 0, replayed.output[-3000:]
    written = _written(replayed)
    for key in ("markdown", "html", "json"):
        assert Path(written[key]).is_file()
        assert Path(written[key]).parent == replayed.tmp / "reports"
    # JSON log mode: nothing but JSON lines, the paths are in report.written
    assert all(line.startswith("{") for line in replayed.output.splitlines() if line.strip())


def test_in_console_mode_the_replay_ends_with_the_final_table_and_the_paths(
        replayed: Replayed, tmp_path: Path) -> None:
    proc = replayed.run("--config", str(replayed.settings), "--replay", str(SAMPLE), "--fresh",
                        "--log-format", "console", timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout[proc.stdout.rindex("(final)"):]
    assert "buy_and_hold" in table and "ema_cross" in table and "95% CI" in table
    paths = re.findall(r"^report: (.+)$", table, re.M)  # after the table, near the end
    md, page = (Path(p) for p in paths)
    assert md.suffix == ".md" and page.suffix == ".html" and md.is_file() and page.is_file()
    assert proc.stdout.count("\n", proc.stdout.index("report: ")) < 5


async def _db_figures(url: str, run_id: str) -> dict[str, dict[str, Any]]:
    """The figures, queried straight from the tables (not through engine.report)."""
    conn = await asyncpg.connect(url)
    try:
        lo = await conn.fetchval("SELECT id FROM runs WHERE run_id = $1", run_id)
        hi = await conn.fetchval("SELECT id FROM runs WHERE id > $1 ORDER BY id LIMIT 1", lo)
        within = "id >= $1 AND ($2::uuid IS NULL OR id < $2)"
        out: dict[str, dict[str, Any]] = {}
        for r in await conn.fetch(
            f"""SELECT trader,
                  (array_agg(equity ORDER BY id))[1] AS first_equity,
                  (array_agg(equity ORDER BY id DESC))[1] AS last_equity,
                  max(drawdown_pct) AS max_dd
                FROM account_snapshots WHERE {within} GROUP BY trader""", lo, hi):
            out[r["trader"]] = dict(r)
        for r in await conn.fetch(
            f"SELECT trader, count(*) AS fills, sum(fee) AS fees FROM fills WHERE {within} "
            "GROUP BY trader", lo, hi):
            out[r["trader"]].update(r)
        for r in await conn.fetch(
            f"SELECT trader, count(*) AS trades, min(ts - opened_at) AS shortest "
            f"FROM positions WHERE event = 'close' AND {within} GROUP BY trader", lo, hi):
            out[r["trader"]].update(r)
        for r in await conn.fetch(
            f"""SELECT trader, count(*) AS decisions, count(*) FILTER (WHERE NOT valid) AS invalid,
                  count(*) FILTER (WHERE NOT EXISTS (
                      SELECT 1 FROM jsonb_array_elements(decision->'actions') a
                      WHERE a->>'action' <> 'hold')) AS holds,
                  sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens)
                    AS tokens, sum(cost_usd) AS cost
                FROM decisions WHERE {within} GROUP BY trader""", lo, hi):
            out[r["trader"]].update(r)
        for r in await conn.fetch(
            f"SELECT trader, coalesce(sum(amount), 0) AS funding FROM funding WHERE {within} "
            "GROUP BY trader", lo, hi):
            out[r["trader"]].update(r)
        return out
    finally:
        await conn.close()


async def test_the_reports_figures_equal_the_databases(replayed: Replayed) -> None:
    figures = _figures(replayed)
    db = await _db_figures(replayed.url, figures["run"]["run_id"])
    traders = {t["trader"]: t for t in figures["traders"]}
    assert set(traders) == set(db) == {"buy_and_hold", "ema_cross"}
    assert figures["run"]["mode"] == "replay"
    for name, t in traders.items():
        d = db[name]
        assert t["start_equity"] == d["first_equity"]
        assert t["end_equity"] == d["last_equity"]
        assert t["return_pct"] == pytest.approx(
            (d["last_equity"] - d["first_equity"]) / d["first_equity"] * 100, abs=1e-9)
        assert t["max_drawdown_pct"] == d["max_dd"]
        assert t["fills"] == d["fills"]
        assert t["fees"] == pytest.approx(d["fees"], abs=1e-9)
        assert t["funding"] == pytest.approx(d.get("funding", 0.0), abs=1e-9)
        assert t["trades"] == (d.get("trades") or 0)
        assert t["decisions"] == d["decisions"]
        assert t["invalid_pct"] == pytest.approx(d["invalid"] / d["decisions"] * 100)
        assert t["hold_pct"] == pytest.approx(d["holds"] / d["decisions"] * 100)
        assert t["tokens"] == d["tokens"] and t["llm_cost_usd"] == pytest.approx(d["cost"])
    # ema_cross trades in the sample: its trades and holding times are real figures
    assert traders["ema_cross"]["trades"] > 0
    assert traders["ema_cross"]["avg_holding_s"] >= db["ema_cross"]["shortest"].total_seconds()
    # ranked by return, each row with its interval around the return
    ranked = [t["return_pct"] for t in figures["traders"]]
    assert ranked == sorted(ranked, reverse=True)
    for t in figures["traders"]:
        lo, hi = t["stats"]["return_ci"]
        assert lo <= hi


def test_the_markdown_shows_the_figures_and_the_run(replayed: Replayed) -> None:
    figures = _figures(replayed)
    text = Path(_written(replayed)["markdown"]).read_text()
    run = figures["run"]
    assert f"**settings hash**: {run['settings_hash']}" in text
    assert "**mode**: replay" in text
    assert "**duration**: 1h3" in text  # the sample is 1.5 h of market
    for t in figures["traders"]:
        row = next(line for line in text.splitlines()
                   if line.startswith("| ") and f"| {t['trader']} |" in line)
        assert f"{t['end_equity']:,.2f}" in row and f"{t['return_pct']:+.3f}" in row


def test_the_report_command_rewrites_the_same_report(replayed: Replayed, tmp_path: Path) -> None:
    figures = _figures(replayed)
    proc = replayed.run("report", "--config", str(replayed.settings), "--run",
                        figures["run"]["run_id"][:13], "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    paths = re.findall(r"^report: (.+)$", proc.stdout, re.M)
    assert [Path(p).suffix for p in paths] == [".md", ".html"]
    first = Path(_written(replayed)["markdown"]).read_text()
    assert Path(paths[0]).read_text() == first
    assert "buy_and_hold" in proc.stdout  # the final table


def test_an_unknown_run_is_one_line_and_exit_1(replayed: Replayed) -> None:
    proc = replayed.run("report", "--config", str(replayed.settings), "--run", "ffffffff")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("report error: no run with id")


@requires_chromium
async def test_the_html_renders_in_chromium_without_errors(replayed: Replayed) -> None:
    page_path = Path(_written(replayed)["html"])
    text = _read(page_path)
    assert "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text
    errors: list[str] = []
    requests: list[str] = []
    async with launched_chromium() as browser:
        page = await browser.new_page()
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("request", lambda req: requests.append(req.url))
        await page.goto(page_path.as_uri())
        curves = await page.locator("svg polyline").count()
        rows = await page.locator("table#leaderboard tbody tr").count()
        width = await page.evaluate("document.querySelector('svg').getBoundingClientRect().width")
        await page.close()
    assert errors == []
    assert requests == [page_path.as_uri()]  # nothing else is loaded
    assert curves == rows == 2
    assert width > 500
