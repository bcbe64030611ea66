"""The sweep report's Probability of Backtest Overfitting: engine.paper.pbo's CSCV across the
variants, with the windows as submatrices, on per-cycle returns read back by run_id."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson

from engine.paper.pbo import pbo
from engine.report.sweep import (
    RunResult,
    load_sweep_report,
    render_json,
    render_markdown,
    summarise,
)
from engine.store.database import migrate
from tests.support.store import fetch, persist, run_started, snapshot

HOUR = 3600.0
GOOD = [0.02, 0.01, 0.03]
BAD = [-0.01, 0.0, -0.02]


def _run(variant: str, window: int, returns: list[float], replicate: int = 0) -> RunResult:
    start = window * HOUR
    return RunResult(key=f"{variant}{window}{replicate}", variant=variant, window_start=start,
                     window_end=start + HOUR, replicate=replicate, run_id=None,
                     return_pct=sum(returns) * 100,
                     cycle_returns=[(start + 300 * (i + 1), r) for i, r in enumerate(returns)])


def test_variants_each_lucky_in_one_window_are_overfit_with_pbo_one() -> None:
    # x_k does well only in window k: the in-sample best (lucky in an in-sample window) is among
    # the worst out of sample in every one of the 6 combinations.
    runs = [_run(f"x{k}", w, GOOD if w == k else BAD) for w in range(4) for k in range(4)]
    report = summarise("s", runs)
    expected = pbo([{f"x{k}": GOOD if w == k else BAD for k in range(4)} for w in range(4)])
    assert expected is not None
    assert (report.pbo, report.pbo_combinations) == (expected.pbo, expected.combinations)
    assert report.pbo == 1.0 and report.pbo_combinations == 6
    data = orjson.loads(render_json(report))
    assert data["pbo"] == 1.0 and data["pbo_combinations"] == 6
    assert "cycle_returns" not in data["runs"][0]
    assert "PBO = 1.0000 over 6 combinations of 2 in-sample windows" in render_markdown(report)


def test_a_variant_better_in_every_window_is_not_overfit_and_replicates_average_per_cycle(
) -> None:
    skill = [0.03, 0.02, 0.04]
    runs = [r for w in range(4) for r in (
        _run("skill", w, skill), _run("noise", w, [0.01 * (w - 1), -0.01, 0.02]),
        _run("flat", w, BAD, replicate=0), _run("flat", w, [x + 0.01 for x in BAD], 1))]
    report = summarise("s", runs)
    expected = pbo([{"skill": skill, "noise": [0.01 * (w - 1), -0.01, 0.02],
                     "flat": [x + 0.005 for x in BAD]} for w in range(4)])
    assert expected is not None and expected.pbo == 0.0
    assert report.pbo == expected.pbo
    assert orjson.loads(render_json(report))["pbo"] == 0.0


def test_too_few_variants_or_windows_withhold_the_pbo_and_say_why() -> None:
    runs = [_run(v, w, GOOD) for w in range(2) for v in ("a", "b", "c")]
    report = summarise("s", runs)
    assert report.pbo is None
    assert orjson.loads(render_json(report))["pbo"] is None
    assert ("Not computed: it needs at least 3 variants and an even number of windows, at "
            "least 4 (3 variants, 2 windows here).") in render_markdown(report)
    # A variant missing from a window (its run failed) does not count.
    runs = [_run(v, w, GOOD) for w in range(4) for v in ("a", "b", "c") if (v, w) != ("c", 3)]
    assert "(2 variants, 4 windows here)" in summarise("s", runs).pbo_note


async def test_the_report_reads_each_runs_cycle_returns_by_run_id(
    database_url: str, tmp_path: Path,
) -> None:
    await migrate(database_url)
    equity = {"a": [10_000, 10_100, 10_050, 10_200], "b": [10_000, 9_900, 9_950, 10_000],
              "c": [10_000, 10_020, 10_010, 10_030]}
    expected: list[dict[str, list[float]]] = []
    for w in range(4):
        start = 1_767_225_600.0 + w * HOUR
        expected.append({})
        for v, curve in equity.items():
            # each window shifts the curve so the variants' ranks change between windows
            points = [e * (1 + 0.001 * w * (i % 2) * (1 if v == "b" else -1))
                      for i, e in enumerate(curve)]
            started = run_started(True, start, mode="backtest", source=f"s{v}{w}")
            snaps = [snapshot(v, e, start + 300 * i) for i, e in enumerate(points)]
            twin = [snapshot(f"{v}2", e * 1.01 if i == 3 else e, start + 300 * i)
                    for i, e in enumerate(points)] if v == "a" else []
            stray = snapshot(v, 1.0, start + 450, cause="fill")  # not a cycle: left out
            await persist(database_url, started, *snaps, *twin, stray)
            await _sweep_run(database_url, v, start, started.run_id, tmp_path)
            returns = [b / a - 1 for a, b in itertools.pairwise(points)]
            if twin:  # the variant's two traders: their mean per cycle
                twin_eq = [s.equity for s in twin]
                twin_r = [b / a - 1 for a, b in itertools.pairwise(twin_eq)]
                returns = [(x + y) / 2 for x, y in zip(returns, twin_r, strict=True)]
            expected[w][v] = returns
    # another sweep's run in the same database stays out
    other = run_started(True, 1_767_225_600.0, mode="backtest", source="other")
    await persist(database_url, other, snapshot("a", 1.0, 1_767_225_900.0))

    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        report = await load_sweep_report(conn, "s")
    finally:
        await conn.close()

    want = pbo(expected)
    assert want is not None and report.pbo is not None
    assert abs(report.pbo - want.pbo) < 1e-12 and report.pbo_combinations == 6
    for run in report.runs:
        w = int((run.window_start - 1_767_225_600.0) // HOUR)
        got = [r for _, r in run.cycle_returns]
        assert all(abs(x - y) < 1e-9 for x, y in zip(got, expected[w][run.variant], strict=True))
    assert len(await fetch(database_url, "SELECT 1 FROM runs")) == 13


async def _sweep_run(dsn: str, variant: str, start: float, run_id: uuid.UUID,
                     tmp_path: Path) -> None:
    rows = await fetch(
        dsn, "INSERT INTO sweep_runs (sweep, key, variant, window_start, window_end, replicate, "
             "status, run_id, run_dir) VALUES ('s', $1, $2, $3, $4, 0, 'done', $5, $6) "
             "RETURNING key", f"{variant}{start}", variant, datetime.fromtimestamp(start, UTC),
        datetime.fromtimestamp(start + HOUR, UTC), run_id, str(tmp_path / "runs"))
    assert rows
