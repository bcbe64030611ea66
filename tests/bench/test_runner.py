"""The bench runner: a leftover Postgres is stopped; --compare shows figures side by side."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.__main__ import compare, stop_postgres_under

ROOT = Path(__file__).resolve().parents[2]

# A child that starts an embedded Postgres under the given directory and exits without stopping
# it, as a benchmark module killed at its time limit would.
# pgserver gives `pg_ctl start` 10 s; on a loaded machine the first start can take longer, and a
# second call finds the server the first one started.
ORPHAN = """
import sys, pgserver
for attempt in range(3):
    try:
        server = pgserver.get_server(sys.argv[1], cleanup_mode=None)
        break
    except Exception:
        if attempt == 2:
            raise
print(open(sys.argv[1] + "/postmaster.pid").read().split()[0], flush=True)
"""


def test_a_postgres_left_running_under_the_module_directory_is_stopped(tmp_path: Path) -> None:
    data = tmp_path / "tmp" / "arena-bench-pg-x"
    data.parent.mkdir()
    out = subprocess.run([sys.executable, "-c", ORPHAN, str(data)], capture_output=True,
                         text=True, timeout=180, check=False, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    pid = int(out.stdout.split()[-1])
    os.kill(pid, 0)  # still running after its starter exited
    assert stop_postgres_under(tmp_path) == [pid]
    assert not (data / "postmaster.pid").exists() or not _alive(pid)
    assert stop_postgres_under(tmp_path) == []  # nothing left


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(") ", 1)[-1][:1] != "Z"


def test_compare_prints_each_figure_next_to_the_committed_one() -> None:
    base = {"started_at": "before", "results": [
        {"name": "feed.vs_parse_floor", "value": 0.2, "unit": "x", "target": ">= 0.3",
         "met": False, "module": "feed"},
        {"name": "feed.gone", "value": 5.0, "unit": "x", "target": "", "met": None,
         "module": "feed"}]}
    now = {"results": [
        {"name": "feed.vs_parse_floor", "value": 0.25, "unit": "x", "target": ">= 0.3",
         "met": False, "module": "feed"},
        {"name": "feed.new", "value": 1.0, "unit": "x", "target": "", "met": None,
         "module": "feed"}]}
    lines = compare(now, base).splitlines()
    row = next(line for line in lines if line.startswith("feed.vs_parse_floor"))
    assert row.split()[1:4] == ["0.25", "0.2", "+25.0%"]
    assert "(new)" in next(line for line in lines if line.startswith("feed.new"))
    assert "(not run)" in next(line for line in lines if line.startswith("feed.gone"))
