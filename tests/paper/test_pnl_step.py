"""The PnL step's leaderboard refresh: awaited live, in the background in a backtest."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from engine.bus import Bus
from engine.clock import SimClock
from engine.cycle import CycleContext
from engine.paper.broker import PaperBroker
from engine.paper.leaderboard import BoardStats
from engine.paper.steps import PnLStep
from tests.support.broker import FakeBook, broker_settings, risk_settings


class GatedBroker(PaperBroker):
    """The real broker whose leaderboard refresh waits for the test to let it finish."""

    def __init__(self, clock: SimClock, bus: Bus) -> None:
        super().__init__(broker_settings(), risk_settings(), bus, clock, FakeBook(),
                         symbols=["BTCUSDT"])
        self.open_account("a", 10_000.0)
        self.gate = asyncio.Event()
        self.started = self.finished = 0
        self.fail = False

    async def refresh_board_stats(self) -> BoardStats:
        self.started += 1
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("resampling failed")
        stats = await super().refresh_board_stats()
        self.finished += 1
        return stats


def ctx_of(clock: SimClock, n: int) -> CycleContext:
    return CycleContext(f"c{n}", "timer", clock.time(), dry_run=False)


async def settle() -> None:
    for _ in range(20):  # the refresh task's own turns and its worker thread's answer
        await asyncio.sleep(0)


async def test_live_the_cycle_waits_for_the_leaderboards_cis(clock: SimClock, bus: Bus) -> None:
    broker = GatedBroker(clock, bus)
    broker.gate.set()
    await PnLStep(broker)(ctx_of(clock, 1))
    assert (broker.started, broker.finished) == (1, 1)


async def test_a_backtest_does_not_wait_for_the_cis_nor_doubles_a_running_refresh(
        clock: SimClock, bus: Bus) -> None:
    broker = GatedBroker(clock, bus)
    step = PnLStep(broker, board_every=1, board_in_background=True)
    await step(ctx_of(clock, 1))  # returns while the refresh waits at the gate
    await settle()
    assert (broker.started, broker.finished) == (1, 0)
    for n in range(2, 5):  # due every cycle, but one is still running
        await step(ctx_of(clock, n))
        await settle()
    assert broker.started == 1
    broker.gate.set()
    while broker.finished == 0:
        await asyncio.to_thread(lambda: None)  # the bootstrap's worker thread answers
        await settle()
    await step(ctx_of(clock, 5))  # the last one finished: the next due one starts
    await settle()
    assert broker.started == 2


async def test_a_failed_background_refresh_is_logged_and_the_next_one_tried(
        clock: SimClock, bus: Bus) -> None:
    broker = GatedBroker(clock, bus)
    broker.fail = True
    broker.gate.set()
    step = PnLStep(broker, board_every=2, board_in_background=True)
    with capture_logs() as logs:
        await step(ctx_of(clock, 1))
        await settle()
        await step(ctx_of(clock, 2))  # not due (every 2 cycles)
        await step(ctx_of(clock, 3))
        await settle()
    failed = [e for e in logs if e["event"] == "leaderboard.refresh_failed"]
    assert broker.started == 2  # the failure did not stop the next due refresh
    assert len(failed) == 2 and all("resampling failed" in e["error"] for e in failed)
