"""Every benchmark measures something: `python -m bench --tiny` runs each module's workload small
and every figure with a target must have measured a non-empty workload (rows written, frames
delivered, positions open during the busy triggers, requests answered)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import TINY_MODULES, _checked

ROOT = Path(__file__).resolve().parents[2]


def test_a_row_that_measured_nothing_is_failed() -> None:
    row = {"name": "x.y", "value": 1.0, "unit": "x", "target": ">= 1", "met": True,
           "detail": "d", "workload": 0}
    assert _checked(row) == dict(row, met=False, detail="EMPTY WORKLOAD (measured nothing); d")
    assert _checked(dict(row, workload=5)) == dict(row, workload=5)


@pytest.mark.timeout(600)
def test_every_benchmark_with_a_target_measures_a_non_empty_workload(tmp_path: Path) -> None:
    out = tmp_path / "tiny.json"
    env = dict(os.environ, ARENA_BENCH_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "bench", "--tiny", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=570, check=False)
    report = json.loads(out.read_text(encoding="utf-8"))
    rows = report["results"]
    assert report["tiny"] is True
    assert {r["module"] for r in rows} == set(TINY_MODULES), done.stderr[-3000:]
    assert [r["name"] for r in rows if r["name"].endswith(".error")] == [], done.stderr[-3000:]
    targeted = [r for r in rows if r["target"] and r["met"] is not None]
    assert len(targeted) >= len(TINY_MODULES)
    empty = {r["name"]: r["workload"] for r in targeted
             if not isinstance(r["workload"], int) or r["workload"] <= 0}
    assert empty == {}
