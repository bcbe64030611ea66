"""`run.py sweep --demo`: four backtests in processes of their own, one arena each, resumable."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import orjson
import pytest
import structlog

from engine.app.commands import db_main
from engine.app.sweep import run_demo
from tests.support.store import fetch


@pytest.fixture(autouse=True)
def _keep_logging():
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"yes": True, "concurrency": None, "ray": None, "prune": False,
                                 **kw})


def _env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["DATABASE_URL"] = database_url
    return env


async def test_the_demo_runs_four_backtests_each_in_its_own_arena_then_nothing(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code = await run_demo(_args(), io.StringIO(), tmp_path, _env(database_url))

    out = capsys.readouterr().out
    assert code == 0, out
    assert "sweep: 4 of 4 runs to run" in out
    assert out.count("sweep: [") == 4 and "FAILED" not in out
    runs = await fetch(database_url, "SELECT run_id, arena_id, mode FROM runs")
    assert len(runs) == 4
    assert all(r["arena_id"] == r["run_id"] and r["mode"] == "backtest" for r in runs)
    swept = await fetch(database_url, "SELECT run_id, status, variant FROM sweep_runs")
    assert sorted(r["variant"] for r in swept) == ["ema", "ema", "hold", "hold"]
    assert {r["run_id"] for r in swept} == {r["run_id"] for r in runs}
    assert {r["status"] for r in swept} == {"done"}
    per_run = await fetch(database_url, "SELECT run_id, count(DISTINCT trader) AS traders "
                                        "FROM account_snapshots GROUP BY run_id")
    assert sorted(r["traders"] for r in per_run) == [1, 1, 1, 1]  # each its variant's trader
    report = (tmp_path / "reports" / "sweeps" / "demo" / "report.md").read_text()
    assert "| window | ema | hold |" in report
    assert report.count("[report](") == 4
    assert ("Not computed: it needs at least 3 variants and an even number of windows, at least 4"
            " (2 variants, 2 windows here).") in report
    data = orjson.loads((tmp_path / "reports" / "sweeps" / "demo" / "report.json").read_bytes())
    assert data["pbo"] is None and data["pbo_note"].startswith("Not computed")

    assert await run_demo(_args(), io.StringIO(), tmp_path, _env(database_url)) == 0
    assert "sweep: 0 of 4 runs to run" in capsys.readouterr().out

    # Edited: the ema variant's size changes; only its two runs run again, and --prune drops
    # the two the file no longer names.
    sweep_file = tmp_path / "demo.toml"
    from engine.app.sweep import run_sweep
    from engine.app.sweep_plan import load_sweep

    sweep_file.write_text(sweep_file.read_text().replace(
        'traders = ["ema_fast"]', 'traders = ["ema_fast"]\nparams = { size_pct = 5 }'))
    code = await run_sweep(load_sweep(sweep_file), _args(prune=True), io.StringIO(),
                           _env(database_url))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "sweep: pruned 2 run(s)" in out
    assert "sweep: 2 of 4 runs to run" in out
    assert len(await fetch(database_url, "SELECT 1 FROM runs")) == 4
    code = await run_sweep(load_sweep(sweep_file), _args(prune=True), io.StringIO(),
                           _env(database_url))
    out = capsys.readouterr().out
    assert "sweep: pruned 0 run(s), 0 row(s)" in out and "sweep: 0 of 4 runs to run" in out


async def test_db_prune_removes_a_runs_rows_and_files(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert await run_demo(_args(), io.StringIO(), tmp_path, _env(database_url)) == 0
    capsys.readouterr()
    victim = (await fetch(database_url, "SELECT run_id, run_dir FROM sweep_runs LIMIT 1"))[0]
    monkeypatch.setenv("DATABASE_URL", database_url)

    import asyncio

    code = await asyncio.to_thread(db_main, ["--config", str(tmp_path / "settings.toml"),
                                             "--prune", str(victim["run_id"])])

    assert code == 0
    assert "db: pruned 1 run(s)" in capsys.readouterr().out
    for table in ("runs", "account_snapshots", "cycles", "fills", "sweep_runs"):
        left = await fetch(database_url, f"SELECT count(*) AS n FROM {table} "
                                         "WHERE run_id = $1", victim["run_id"])
        assert left[0]["n"] == 0, table
    assert not await asyncio.to_thread(Path(victim["run_dir"]).exists)
    assert len(await fetch(database_url, "SELECT 1 FROM runs")) == 3


async def test_an_interrupted_run_starts_again_without_the_rows_of_its_first_attempt(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run_demo(_args(), io.StringIO(), tmp_path, _env(database_url)) == 0
    first = (await fetch(database_url, "SELECT key, run_id FROM sweep_runs LIMIT 1"))[0]
    await fetch(database_url, "UPDATE sweep_runs SET status = 'running', finished_at = NULL "
                              "WHERE key = $1", first["key"])  # as a killed sweep leaves it
    capsys.readouterr()

    assert await run_demo(_args(), io.StringIO(), tmp_path, _env(database_url)) == 0

    assert "sweep: 1 of 4 runs to run" in capsys.readouterr().out
    again = (await fetch(database_url, "SELECT run_id, status FROM sweep_runs WHERE key = $1",
                         first["key"]))[0]
    assert again["status"] == "done" and again["run_id"] != first["run_id"]
    runs = {r["run_id"] for r in await fetch(database_url, "SELECT run_id FROM runs")}
    assert len(runs) == 4 and first["run_id"] not in runs
    left = await fetch(database_url, "SELECT count(*) AS n FROM account_snapshots "
                                     "WHERE run_id = $1", first["run_id"])
    assert left[0]["n"] == 0
