"""Where the leaderboard's bootstrap runs: a worker process of its own, or a thread.

`board_stats` (engine.paper.leaderboard) is numpy work of tens of milliseconds a refresh: 1,000
resamples of each trader's returns and of every pair's. In a thread it shares the interpreter
lock with the event loop, and takes it back after each numpy call: one 24-hour soak
(bench.soak) with the refreshes in a thread beside the replay measured 41.0 s of the loop
thread's CPU time against 34.5 s with each refresh awaited, and a slower replay (55.8 s against
52.1 s; single runs on a shared machine). `BoardWorker(processes=True)`, the engine's, runs them
in one process of its own (spawned, so nothing of this one is inherited), on another core, and
the loop never waits for the lock. A backtest's, `processes=False`, keeps the thread: its
refreshes are rare (every `backtest.board_every_cycles` cycles) and a sweep runs many backtests
side by side, each of which would otherwise start a process.

The process is started at the first refresh with something to resample: a run that never has
`leaderboard.min_returns` returns never starts one, and a refresh with nothing to resample is
computed here, at once. Its results are the same as in a thread: the draws are seeded
(engine.paper.stats). When the process dies, the refresh fails with `BrokenProcessPool` (the
caller logs it and keeps the last statistics) and the next refresh starts a new one. When the
engine dies (kill -9), the process notices within a second and exits: it is never left behind.
Where no process can be started (process limits, no working `sem_open`), the first refresh logs
`leaderboard.worker_unavailable` and the bootstrap runs in a thread from then on.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import structlog

from engine.paper.leaderboard import BoardStats, board_stats
from engine.settings import LeaderboardSettings

log = structlog.get_logger("leaderboard")

Series = Mapping[str, Sequence[tuple[float, float]]]
PARENT_POLL_S = 0.5  # how often the worker process checks that the engine still runs


class BoardWorker:
    """Computes `board_stats` off the event loop: in a process of its own, or in a thread."""

    __slots__ = ("_pool", "processes", "started")

    def __init__(self, *, processes: bool) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self.started = 0  # worker processes started, ever

    async def compute(self, series: Series, periods_per_year: Mapping[str, float | None],
                      settings: LeaderboardSettings) -> BoardStats:
        """Return `board_stats(series, periods_per_year, settings)`, computed off the loop when
        there is anything to resample."""
        if not any(len(s) >= settings.min_returns for s in series.values()):
            return board_stats(series, periods_per_year, settings)  # everything withheld
        if not self.processes:
            return await asyncio.to_thread(board_stats, series, periods_per_year, settings)
        loop = asyncio.get_running_loop()
        try:
            pool = self._pool
            if pool is None:
                pool = self._pool = ProcessPoolExecutor(
                    1, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with_parent, initargs=(os.getpid(),))
                self.started += 1
            future = loop.run_in_executor(pool, board_stats, series, periods_per_year, settings)
        except (OSError, NotImplementedError) as exc:  # no process here (limits, no sem_open)
            log.warning("leaderboard.worker_unavailable", error=repr(exc),
                        detail="the bootstrap runs in a thread from now on")
            self.close()
            self.processes = False
            return await asyncio.to_thread(board_stats, series, periods_per_year, settings)
        try:
            return await future
        except BrokenProcessPool:
            log.error("leaderboard.worker_died", detail="the next refresh starts a new one")
            self._drop(pool)
            raise

    def pids(self) -> tuple[int, ...]:
        """Return the worker process's pid, or nothing while no process runs."""
        return tuple(self._pool._processes or ()) if self._pool is not None else ()

    def close(self) -> None:
        """Stop the worker process (a refresh it is computing is abandoned)."""
        if self._pool is not None:
            self._drop(self._pool)

    def _drop(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)


def _exit_with_parent(parent: int) -> None:
    """In the worker process: exit as soon as `parent` is gone (its pipes stay open in here, so
    nothing else would end it)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="board-worker.parent", daemon=True).start()
