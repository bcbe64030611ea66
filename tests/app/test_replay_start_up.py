"""A replay's start-up never costs it a cycle: simulated time waits for the engine's start-up work
that runs on wall time (the LLM warm-up in a worker thread) and for the scheduler to register its
first fires, however long the machine takes for either. Before this, the replay moved time on
while the warm-up thread ran, and the scheduler armed at whatever time the replay had reached:
a 24 h soak on a loaded machine ran 287 of its 288 cycles, a 2 h one 21 of 24."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

import engine.app.engine as engine_module
from engine.app.engine import Engine, Options
from engine.events import JobRun
from engine.market.recording import first_frame_time
from engine.settings import Secrets, load_settings
from tests.app.test_cycle_timing import default_cycle_job
from tests.support.live_engine import BUY_AND_HOLD, SAMPLE


async def replay_cycle_starts(tmp_path: Path, warm_up_turns: int,
                              monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replay the sample (dry run) with a warm-up that lets the loop turn `warm_up_turns` times
    before it returns, as a worker thread on a busy machine does; return the cycles' starts."""
    path = tmp_path / "settings.toml"
    path.write_text("[control]\nenabled = false\n[report]\non_exit = false\n"
                    + default_cycle_job() + BUY_AND_HOLD)
    engine = Engine(load_settings(path), Secrets(None, None, None, None, None),
                    Options(replay=str(SAMPLE), dry_run=True, no_alerts=True))

    async def slow_warm_up(strategies: object) -> dict[str, float]:
        for _ in range(warm_up_turns):
            await asyncio.sleep(0)
        return {}

    monkeypatch.setattr(engine_module, "warm_up", slow_warm_up)
    runs = engine.bus.subscribe("test.runs", [JobRun], capacity=10_000, policy="block")
    assert await engine.run() == 0
    assert gc.get_freeze_count() == 0  # frozen once ready, thawed when the engine stopped
    return [e.started_at for e in runs.drain()
            if isinstance(e, JobRun) and e.job == "trading_cycle" and e.status == "ok"]


@pytest.mark.parametrize("warm_up_turns", [0, 5_000])
async def test_every_cycle_of_the_sample_runs_however_long_the_warm_up_takes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warm_up_turns: int) -> None:
    t0 = first_frame_time(SAMPLE)
    assert t0 is not None and t0 % 300 == 0
    starts = await replay_cycle_starts(tmp_path, warm_up_turns, monkeypatch)
    # 1.5 h of market from a 5-minute mark: a cycle 2 s after each of its 18 marks.
    assert starts == [t0 + 300 * k + 2 for k in range(18)]
