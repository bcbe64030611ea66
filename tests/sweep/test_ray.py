"""`run.py sweep --ray local`: each backtest a Ray task, against a Ray started on this machine."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import pytest
import structlog

from engine.app.sweep import run_demo
from tests.support.store import fetch

pytest.importorskip("ray", reason="the arena[ray] extra is not installed")


@pytest.fixture(autouse=True)
def _keep_logging():
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


async def test_the_demo_runs_as_ray_tasks_each_in_its_own_arena(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["DATABASE_URL"] = database_url
    args = argparse.Namespace(yes=True, concurrency=None, ray="local", prune=False)

    code = await run_demo(args, io.StringIO(), tmp_path, env)

    out = capsys.readouterr().out
    assert code == 0, out
    assert "sweep: 4 of 4 runs to run" in out and out.count("sweep: [") == 4
    runs = await fetch(database_url, "SELECT run_id, arena_id FROM runs")
    assert len(runs) == 4 and all(r["arena_id"] == r["run_id"] for r in runs)
    done = await fetch(database_url, "SELECT run_dir FROM sweep_runs WHERE status = 'done'")
    assert len(done) == 4
    assert all(_came_back(Path(r["run_dir"])) for r in done)


def _came_back(run_dir: Path) -> bool:
    """The task's result and log were written into the run's directory."""
    return (run_dir / "result.json").exists() and (run_dir / "run.log").exists()
