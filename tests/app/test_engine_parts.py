"""Small parts of the engine: the bounded equity series, the state /status reports at start."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from engine.app.engine import Engine, Options
from engine.app.target import ControlTarget
from engine.events import AccountSnapshot
from engine.settings import Secrets, Settings
from tests.support.control import snapshot


async def test_the_equity_series_keeps_the_newest_5000_points_per_trader() -> None:
    engine = Engine(Settings(), Secrets.from_env({}), Options())
    engine._equity_sub = engine.bus.subscribe("app.equity", [AccountSnapshot], capacity=10_000)
    task = asyncio.create_task(engine._track_equity())
    for i in range(6_000):
        engine.bus.publish(snapshot("claude", 10_000.0 + i, 1_767_225_600.0 + i))
    for _ in range(100):
        await asyncio.sleep(0)
        curve = engine.equity.get("claude")
        if curve is not None and curve.last() == (1_767_225_600.0 + 5_999, 15_999.0):
            break
    task.cancel()
    series = engine.equity["claude"]
    assert series.size == 5_000 and len(series) == 5_000
    points = series.points()
    assert points[0] == (1_767_225_600.0 + 1_000, 11_000.0)  # the oldest 1000 fell off
    assert points == [(1_767_225_600.0 + i, 10_000.0 + i) for i in range(1_000, 6_000)]
    assert engine.target.equity_history()["claude"][-1] == (1_767_225_600.0 + 5_999, 15_999.0)


def test_status_says_connecting_while_starting_without_the_live_feed() -> None:
    feed = {"state": "connecting", "connected": False, "connect_attempts": 4,
            "last_error": "ConnectionRefusedError(111)", "price_age": {}, "stale": []}
    engine = SimpleNamespace(state="starting", feed=SimpleNamespace(status=lambda: feed))
    target = ControlTarget(engine)
    assert target._state(feed) == "connecting"
    engine.state = "running"
    assert target._state(feed) == "running"


async def test_a_backtests_writer_runs_on_the_wall_clock_and_a_replays_on_simulated_time(
        database_url: str, tmp_path) -> None:
    from engine.app.build import open_store
    from engine.bus import Bus
    from engine.clock import LiveClock, SimClock
    from engine.settings import DatabaseSettings

    settings = Settings(database=DatabaseSettings(spill_path=str(tmp_path / "spill.jsonl")))
    secrets = Secrets.from_env({"DATABASE_URL": database_url})
    clock = SimClock()
    # both commit asynchronously (their source can be run again); a live writer does not
    for mode, wall, commit in (("backtest", True, "off"), ("replay", False, "off"),
                               ("live", False, "on")):
        _, writer, _ = await open_store(settings, secrets, Bus(), clock, fresh=True, mode=mode,
                                        source="s")
        # a backtest's flushes never hold simulated time: nothing reads its rows before the end
        assert isinstance(writer._clock, LiveClock) is wall and (writer._clock is clock) is not wall
        conn = await writer._connection()
        try:
            assert await conn.fetchval("SHOW synchronous_commit") == commit
        finally:
            conn.terminate()
