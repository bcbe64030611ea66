"""In console log mode the engine prints the leaderboard table after each trading cycle.

A real `python run.py --log-format console --replay tests/data/sample.jsonl.gz --speed max`
(rule-based traders, a cycle every simulated minute, control API off, the test's own database)
runs to the end of the recorded market; its stdout must hold one table per cycle, inside that
cycle's log lines, whose equities are the ones persisted for the cycle.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.live_engine import BUY_AND_HOLD, EMA_CROSS, start_replay, stop_if_running
from tests.support.store import fetch

TRADERS = ("buy_and_hold", "ema_cross")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
HEADER = re.compile(r"^#\s+trader\s+equity\s+ret%\s+net%\s")
ROW = re.compile(r"^(?P<rank>\d+)\s+(?P<trader>\S+)\s+(?P<equity>-?[\d,]+\.\d\d)\s")


def tables_by_cycle(lines: list[str]) -> list[tuple[str | None, list[dict[str, str]]]]:
    """Return each printed table's rows with the id of the cycle whose log lines enclose it."""
    out: list[tuple[str | None, list[dict[str, str]]]] = []
    cycle: str | None = None
    rows: list[dict[str, str]] | None = None
    for line in lines:
        if rows is not None:
            if line.startswith("-  "):  # the rule under the header
                continue
            if match := ROW.match(line):
                rows.append(match.groupdict())
                continue
            out.append((cycle, rows))
            rows = None
        if HEADER.match(line):
            rows = []
        elif " cycle.started " in line:
            cycle = re.search(r"cycle_id=(\S+)", line).group(1)  # type: ignore[union-attr]
        elif " cycle.finished " in line:
            cycle = None
    return out


async def test_console_mode_prints_the_leaderboard_table_after_each_cycle(
    database_url: str, tmp_path: Path
) -> None:
    engine = await start_replay(database_url, tmp_path, BUY_AND_HOLD + EMA_CROSS,
                                "--speed", "max", "--log-format", "console")
    try:
        code = await engine.exit_code(60)
    finally:
        await stop_if_running(engine)
    lines = [ANSI.sub("", raw).rstrip("\n") for raw in engine.raw]

    assert code == 0, engine.tail()
    finished = [re.search(r"cycle_id=(\S+)", line).group(1)  # type: ignore[union-attr]
                for line in lines if " cycle.finished " in line and "status=ok" in line]
    tables = tables_by_cycle(lines)
    assert len(finished) >= 60  # 1.5 h of market, a cycle per simulated minute
    assert [cycle for cycle, _ in tables] == finished  # one table per cycle, inside that cycle
    for _, rows in tables:
        assert sorted(r["trader"] for r in rows) == sorted(TRADERS)
        # honest ranks: 1 + the traders that beat it with P >= 0.95 (1 while P is withheld)
        ranks = [int(r["rank"]) for r in rows]
        assert ranks[0] == 1 and all(1 <= k <= len(TRADERS) for k in ranks)

    # The last table shows the equities persisted with that cycle's account snapshots.
    last_cycle, last_rows = tables[-1]
    snaps = await fetch(database_url, "SELECT trader, equity FROM account_snapshots "
                        "WHERE cause = 'cycle' AND cycle_id = $1", last_cycle)
    persisted = {s["trader"]: s["equity"] for s in snaps}
    printed = {r["trader"]: float(r["equity"].replace(",", "")) for r in last_rows}
    assert persisted.keys() == printed.keys()
    for trader, equity in printed.items():
        assert abs(equity - persisted[trader]) < 0.006, trader
    assert any(abs(e - 10_000.0) > 1 for e in printed.values())  # the market moved the accounts
