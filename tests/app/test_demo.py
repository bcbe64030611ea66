"""`python run.py demo`: offline, fast, a fresh arena each time, the verdict with CIs on stdout."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = """
[engine]
log_format = "json"
[report]
dir = "{reports}"
[database]
spill_path = "{data}/spill.jsonl"
"""


async def demo(tmp: Path, database_url: str, *args: str) -> tuple[int, str, str, float]:
    """Run `python run.py demo ARGS` with a settings file of the shipped traders and no network
    settings (Binance's URLs stay the default: nothing may reach them); return (code, stdout,
    stderr, wall seconds)."""
    config = tmp / "demo.toml"
    shipped = (ROOT / "settings.toml").read_text()
    traders = shipped[shipped.index("\n[[traders]]"):shipped.index("\n[database]")]
    config.write_text(SETTINGS.format(reports=tmp / "reports", data=tmp / "data") + traders)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["DATABASE_URL"] = database_url
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "demo", "--config", str(config), *args, cwd=tmp,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode(), time.perf_counter() - start


def verdict(out: str) -> str:
    """Return the plain (non-JSON) lines of stdout from the leaderboard on."""
    plain = [line for line in out.splitlines() if not line.startswith("{")]
    return "\n".join(plain[next(i for i, line in enumerate(plain)
                                if line.startswith("Leaderboard:")):])


async def test_the_demo_shows_cis_and_p_a_beats_b_in_well_under_a_minute_and_repeats(
        tmp_path: Path, database_url: str) -> None:
    code, out, err, wall = await demo(tmp_path, database_url, "--hours", "24")
    assert code == 0, err[-3000:]
    assert wall < 60
    text = verdict(out)
    # the leaderboard: every trader with a return CI and a Sharpe CI (24 h: 287 returns >= 30)
    rows = {m[1]: m[0] for m in re.finditer(r"^\d+\s+(\S+)\s.*$", text, re.M)}
    assert set(rows) == {"buy_and_hold", "ema_cross", "random"}
    assert all(len(re.findall(r"\[[-+]?\d+\.\d+, [-+]?\d+\.\d+\]", row)) == 2
               for row in rows.values()), text
    assert "P(row beats column)" in text
    probs = re.findall(r"\b[01]\.\d\d\b", text.split("P(row beats column)")[1])
    assert len(probs) == 6  # every ordered pair of 3 traders
    report = re.search(r"^report: (\S+\.md)$", text, re.M)
    assert report is not None and await asyncio.to_thread(Path(report[1]).is_file)
    assert re.search(r"^page: http://127\.0\.0\.1:8080/ ", text, re.M)
    logs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(e["event"] == "arena.fresh" and e["mode"] == "backtest" for e in logs)
    # nothing tried to reach Binance: history came from the in-process fake
    assert not any("binance.com" in json.dumps(e) for e in logs)

    # the same demo again: a fresh arena, the same market, the same verdict
    code2, out2, err2, _ = await demo(tmp_path, database_url, "--hours", "24")
    assert code2 == 0, err2[-3000:]
    strip = re.compile(r"^(report|page): .*$", re.M)
    assert strip.sub("", verdict(out2)) == strip.sub("", text)
    conn = await asyncpg.connect(database_url)
    try:
        runs = await conn.fetch("SELECT mode, fresh FROM runs ORDER BY id")
    finally:
        await conn.close()
    assert [tuple(r) for r in runs] == [("backtest", True), ("backtest", True)]


async def test_too_few_hours_say_why_a_figure_is_withheld(tmp_path: Path,
                                                          database_url: str) -> None:
    code, out, err, _ = await demo(tmp_path, database_url, "--hours", "1")
    assert code == 0, err[-3000:]
    text = verdict(out)
    assert "needs 30 returns, has 10" in text  # 11 cycles: 10 returns
    assert "[" not in text.split("P(row beats column)")[0].split("\n", 1)[1]  # no CI shown


async def test_bad_hours_are_one_line_and_exit_2(tmp_path: Path, database_url: str) -> None:
    code, out, err, _ = await demo(tmp_path, database_url, "--hours", "abc")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "--hours" in err and "run.py demo --help" in err
