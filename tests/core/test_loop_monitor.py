"""The loop-lag monitor: a blocked loop is measured, logged and counted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from structlog.testing import capture_logs

from engine import metrics
from engine.loop_monitor import LoopMonitor


def _histogram_count() -> float:
    return metrics.REGISTRY.get_sample_value("arena_loop_lag_seconds_count") or 0.0


async def _until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_blocked_loop_is_logged_as_lagged_and_observed() -> None:
    monitor = LoopMonitor(interval=0.01, warn_after=0.1)
    before = _histogram_count()
    with capture_logs() as logs:
        task = asyncio.create_task(monitor.run())
        await _until(lambda: monitor.stats.samples >= 2)
        time.sleep(0.25)  # noqa: ASYNC251 - blocking the loop is the point
        await _until(lambda: monitor.stats.lagged >= 1)
        task.cancel()
    lagged = [x for x in logs if x["event"] == "loop.lagged"]
    assert len(lagged) == 1 and lagged[0]["log_level"] == "warning"
    assert 0.2 <= lagged[0]["lag_s"] < 2.0 and lagged[0]["threshold_s"] == 0.1
    assert monitor.stats.max_lag >= 0.2
    assert _histogram_count() - before == monitor.stats.samples


async def test_reset_starts_a_new_measurement() -> None:
    monitor = LoopMonitor(interval=0.01)
    monitor.observe(0.5)
    monitor.reset()
    monitor.observe(0.002)
    assert monitor.stats.as_dict() == {"samples": 1, "lagged": 0, "max_lag_s": 0.002,
                                       "last_lag_s": 0.002}


def _first_cycle(*args: str) -> dict:
    """Run tests/core/lag_first_cycle.py in a fresh interpreter (nothing imported yet)."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "tests.core.lag_first_cycle", *args], cwd=root,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_first_cycle_with_three_sdk_traders_never_lags_the_loop_over_100_ms() -> None:
    warm = _first_cycle()
    assert (warm["status"], warm["traders"], warm["valid"]) == ("ok", 3, 3)
    assert warm["samples"] >= 3
    assert warm["max_lag"] < 0.1, warm
    # The control: without the warm-up the SDKs' first calls block the loop.
    cold = _first_cycle("--no-warm-up")
    assert cold["valid"] == 3 and cold["max_lag"] > 0.1, cold
