"""`run.py backtest --windows 4`: four consecutive fresh arenas with the same three variants;
the report shows each window and the pooled result per variant, and the PBO equals the one
computed here from the stored equity (independent of the engine's own series)."""

from __future__ import annotations

import itertools
import math
import re
import statistics
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from engine.app.walkforward import bounds
from engine.market.fakebinance import FakeBinance
from tests.backtest.support import TRADERS, run_backtest, write_config

VARIANTS = TRADERS + """
[[traders]]
name = "ema_slow"
strategy = "ema_cross"
params = { timeframe = "15m", size_pct = 20 }
"""


def test_windows_are_consecutive_and_cover_the_period() -> None:
    assert bounds(0.0, 14_400.0, 4) == [(0.0, 3600.0), (3600.0, 7200.0), (7200.0, 10_800.0),
                                       (10_800.0, 14_400.0)]


def cscv(windows: list[dict[str, list[float]]]) -> float:
    names = sorted(windows[0])
    s, n = len(windows), len(names)

    def perf(ws: tuple[int, ...], v: str) -> float:
        xs = [x for w in ws for x in windows[w][v]]
        sd = statistics.stdev(xs)
        return statistics.fmean(xs) / sd if sd > 0 else 0.0

    low = combos = 0
    for train in itertools.combinations(range(s), s // 2):
        test = tuple(w for w in range(s) if w not in train)
        scores = [perf(train, v) for v in names]
        star = scores.index(max(scores))
        oos = [perf(test, v) for v in names]
        rank = sum(o < oos[star] for o in oos) + (sum(o == oos[star] for o in oos) + 1) / 2
        omega = rank / (n + 1)
        low += math.log(omega / (1 - omega)) <= 0
        combos += 1
    return low / combos


async def test_four_windows_report_each_window_pooled_and_the_pbo(tmp_path: Path,
                                                                  database_url: str) -> None:
    server = FakeBinance()
    await server.start()
    try:
        config = write_config(tmp_path, server.rest_url, traders=VARIANTS)
        code, out, err = await run_backtest(
            ["--config", str(config), "--from", "2026-10-01T00:00", "--to", "2026-10-01T04:00",
             "--symbols", "BTCUSDT", "--windows", "4"], database_url, timeout=400)
    finally:
        await server.stop()
    assert code == 0, err
    for i in range(1, 5):
        assert f"backtest: window {i}/4: 2026-10-01T0{i - 1}:00 to 2026-10-01T0{i}:00 UTC" in out
    assert "## Pooled per variant" in out and "| ema_slow |" in out
    m = re.search(r"PBO = (\d\.\d{4}) over 6 combinations", out)
    assert m, out[-2000:]
    conn = await asyncpg.connect(database_url)
    try:
        runs = [r["id"] for r in await conn.fetch("SELECT id FROM runs ORDER BY id")]
        windows = []
        for i, run in enumerate(runs):
            nxt = runs[i + 1] if i + 1 < len(runs) else None
            rows = await conn.fetch(
                "SELECT trader, equity FROM account_snapshots WHERE cause = 'cycle' AND id > $1"
                " AND ($2::uuid IS NULL OR id < $2) ORDER BY ts, id", run, nxt)
            equity: dict[str, list[float]] = {}
            for r in rows:
                equity.setdefault(r["trader"], []).append(r["equity"])
            windows.append({t: [b / a - 1 for a, b in itertools.pairwise(e)]
                            for t, e in equity.items()})
    finally:
        await conn.close()
    assert len(windows) == 4 and all(len(w) == 3 for w in windows)
    assert float(m.group(1)) == round(cscv(windows), 4)
    report = next((tmp_path / "reports").glob("walkforward-20261001T0000-4w.md")).read_text()
    assert "## Return % per window" in report and "PBO = " in report
