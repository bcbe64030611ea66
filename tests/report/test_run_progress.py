"""A replay's progress as the engine reports it: `replay.progress` lines and `/status`."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import aiohttp

from engine.market.progress import count_frames
from tests.report.conftest import Replayed
from tests.support.live_engine import BUY_AND_HOLD, SAMPLE, start_replay, stop_if_running
from tests.support.process import is_event


def test_a_json_replay_logs_its_progress_at_each_10_percent(replayed: Replayed) -> None:
    lines = [json.loads(x) for x in replayed.output.splitlines() if x.startswith("{")]
    progress = [x for x in lines if x["event"] == "replay.progress"]
    finished = next(x for x in lines if x["event"] == "feed.replay_finished")
    total = count_frames(SAMPLE)[0]
    deciles = [x["decile"] for x in progress]
    assert deciles == sorted(set(deciles)) and deciles[-1] == 100 and len(deciles) >= 5
    for x in progress:
        assert x["frames_total"] == total
        assert x["percent"] >= x["decile"]
        assert {"sim_time", "speed_x", "eta_s", "frames_done"} <= set(x)
    assert progress[-1]["frames_done"] == finished["frames"] == total


async def test_status_carries_the_replays_progress(database_url: str, tmp_path: Path) -> None:
    engine = await start_replay(database_url, tmp_path, BUY_AND_HOLD, "--speed", "200",
                                "--log-format", "json", control=True)
    try:
        started = await engine.wait_for(is_event("control.started"), "control API")
        await engine.wait_for(is_event("engine.ready"), "ready")
        url = f"http://127.0.0.1:{started['port']}/status"
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:
                first = (await resp.json())["replay"]
            await engine.wait_for(lambda x: x.get("event") == "replay.progress"
                                  and x.get("decile", 0) >= 20, "20 %")
            async with http.get(url) as resp:
                later = (await resp.json())["replay"]
        assert later["frames_total"] == count_frames(SAMPLE)[0]
        assert later["frames_done"] > first["frames_done"]
        assert later["percent"] >= 20 and later["sim_time"] > first["sim_time"]
        assert later["speed_x"] > 50 and later["eta_s"] > 0
        engine.signal(signal.SIGTERM)
        assert await engine.exit_code(60) == 0
    finally:
        await stop_if_running(engine)
