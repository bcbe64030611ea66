"""The leaderboard's bootstrap in a worker process: the same statistics, started only when there
is something to resample, started again after it died, never left behind by a killed engine."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from engine.paper.board_worker import BoardWorker
from engine.paper.leaderboard import board_stats
from engine.settings import LeaderboardSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = LeaderboardSettings(min_returns=30, bootstrap_samples=200)
PPY = {"a": 105_120.0, "b": 105_120.0}


def series(n: int) -> dict[str, list[tuple[float, float]]]:
    rng = np.random.default_rng(7)
    return {name: [(i * 300.0, float(x)) for i, x in enumerate(rng.normal(0, 1e-3, n))]
            for name in ("a", "b")}


async def test_the_process_computes_what_the_statistics_are_here() -> None:
    worker = BoardWorker(processes=True)
    try:
        got = await worker.compute(series(60), PPY, SETTINGS)
        again = await worker.compute(series(61), PPY, SETTINGS)
    finally:
        worker.close()
    assert got == board_stats(series(60), PPY, SETTINGS)  # seeded draws: equal, not close
    assert again == board_stats(series(61), PPY, SETTINGS)
    assert got.per_trader["a"]["sharpe_ci"] is not None and worker.started == 1


async def test_nothing_to_resample_starts_no_process() -> None:
    worker = BoardWorker(processes=True)
    stats = await worker.compute(series(29), PPY, SETTINGS)  # under min_returns
    assert worker.started == 0
    assert stats == board_stats(series(29), PPY, SETTINGS)
    assert all(v is None for row in stats.per_trader.values() for v in row.values())


async def test_a_dead_worker_fails_its_refresh_and_the_next_one_starts_a_new_process() -> None:
    worker = BoardWorker(processes=True)
    try:
        await worker.compute(series(40), PPY, SETTINGS)
        pool = worker._pool
        assert pool is not None
        for pid in list(pool._processes):  # what an OOM kill would do
            os.kill(pid, signal.SIGKILL)
        with capture_logs() as logs, pytest.raises(BrokenProcessPool):
            await worker.compute(series(41), PPY, SETTINGS)
        assert [e["event"] for e in logs] == ["leaderboard.worker_died"]
        stats = await worker.compute(series(42), PPY, SETTINGS)
    finally:
        worker.close()
    assert worker.started == 2 and stats == board_stats(series(42), PPY, SETTINGS)


async def test_where_no_process_can_start_the_bootstrap_runs_in_a_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.paper.board_worker as module

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(module, "ProcessPoolExecutor", refuse)
    worker = BoardWorker(processes=True)
    with capture_logs() as logs:
        stats = await worker.compute(series(40), PPY, SETTINGS)
        again = await worker.compute(series(41), PPY, SETTINGS)
    assert stats == board_stats(series(40), PPY, SETTINGS)
    assert again == board_stats(series(41), PPY, SETTINGS)
    assert [e["event"] for e in logs] == ["leaderboard.worker_unavailable"]  # once
    assert not worker.processes and worker.started == 0


async def test_a_backtests_worker_uses_a_thread() -> None:
    worker = BoardWorker(processes=False)
    assert await worker.compute(series(40), PPY, SETTINGS) == board_stats(series(40), PPY,
                                                                          SETTINGS)
    assert worker.started == 0


KILLED_ENGINE = """
import asyncio, os, signal
from engine.paper.board_worker import BoardWorker
from engine.settings import LeaderboardSettings

async def main():
    worker = BoardWorker(processes=True)
    s = {k: [(i * 300.0, 1e-3 * ((i * 7 + ord(k)) % 5 - 2)) for i in range(40)] for k in "ab"}
    await worker.compute(s, dict.fromkeys(s, 105120.0), LeaderboardSettings(min_returns=30))
    print(*worker._pool._processes, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_the_worker_process_exits_when_the_engine_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "killed_engine.py"
    script.write_text(KILLED_ENGINE)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == -signal.SIGKILL, done.stderr
    [pid] = map(int, done.stdout.split())
    try:
        fd = os.pidfd_open(pid)  # readable once the process has exited
    except ProcessLookupError:
        return  # already gone
    try:
        readable, _, _ = select.select([fd], [], [], 30)
    finally:
        os.close(fd)
    assert readable, f"worker {pid} still runs 30 s after its engine was killed"
