"""The PnL step's leaderboard refresh. Live: the cycle's board is published once the refresh of
its own statistics is done, and the next cycle waits for it. A backtest: in the background."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from engine.bus import Bus, Subscription
from engine.clock import SimClock
from engine.cycle import CycleContext
from engine.events import Leaderboard
from engine.paper.board_worker import BoardWorker, Series
from engine.paper.broker import PaperBroker
from engine.paper.leaderboard import BoardStats
from engine.paper.steps import PnLStep
from engine.settings import LeaderboardSettings
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


class GatedWorker(BoardWorker):
    """The real worker (in a thread) whose refreshes wait for the test to let them finish."""

    def __init__(self) -> None:
        super().__init__(processes=False)
        self.gate = asyncio.Event()
        self.asked = self.finished = 0
        self.fail = False

    async def compute(self, series: Series, periods_per_year: dict[str, float | None],
                      settings: LeaderboardSettings) -> BoardStats:
        self.asked += 1
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("resampling failed")
        stats = await super().compute(series, periods_per_year, settings)
        self.finished += 1
        return stats


def live_broker(clock: SimClock, bus: Bus, worker: GatedWorker) -> PaperBroker:
    broker = PaperBroker(broker_settings(), risk_settings(), bus, clock, FakeBook(),
                         symbols=["BTCUSDT"], board_worker=worker)
    broker.open_account("a", 10_000.0)
    return broker


def boards(sub: Subscription) -> list[Leaderboard]:
    return [e for e in sub.drain() if isinstance(e, Leaderboard)]


async def test_live_a_cycles_board_is_published_when_its_refresh_is_done_as_of_the_cycle(
        clock: SimClock, bus: Bus) -> None:
    worker = GatedWorker()
    broker = live_broker(clock, bus, worker)
    sub = bus.subscribe("test", [Leaderboard])
    ctx = ctx_of(clock, 1)
    await PnLStep(broker)(ctx)  # returns while the refresh waits at the gate
    await settle()
    assert (worker.asked, worker.finished) == (1, 0) and boards(sub) == []
    await clock.advance(60)
    broker.open_account("b", 5_000.0)  # after the cycle: not on its board
    worker.gate.set()
    await broker.board_published()
    [board] = boards(sub)
    assert (board.cycle_id, board.ts) == ("c1", ctx.started_at)
    assert [r["trader"] for r in board.rows] == ["a"] and board.stats == dict(
        broker.board_stats.info)  # type: ignore[union-attr]


async def test_live_the_next_cycle_waits_for_the_last_boards_refresh(
        clock: SimClock, bus: Bus) -> None:
    worker = GatedWorker()
    broker = live_broker(clock, bus, worker)
    sub = bus.subscribe("test", [Leaderboard])
    step = PnLStep(broker)
    await step(ctx_of(clock, 1))
    second = asyncio.create_task(step(ctx_of(clock, 2)))
    await settle()
    assert not second.done() and worker.asked == 1  # one refresh at a time
    worker.gate.set()
    await second
    await broker.board_published()
    assert [b.cycle_id for b in boards(sub)] == ["c1", "c2"] and worker.finished == 2


async def test_live_a_failed_refresh_is_logged_and_the_board_shows_the_last_statistics(
        clock: SimClock, bus: Bus) -> None:
    worker = GatedWorker()
    worker.gate.set()
    broker = live_broker(clock, bus, worker)
    sub = bus.subscribe("test", [Leaderboard])
    step = PnLStep(broker)
    await step(ctx_of(clock, 1))
    await broker.board_published()
    last = broker.board_stats
    worker.fail = True
    with capture_logs() as logs:
        await step(ctx_of(clock, 2))
        await broker.board_published()
    failed = [e for e in logs if e["event"] == "leaderboard.refresh_failed"]
    assert len(failed) == 1 and "resampling failed" in failed[0]["error"]
    assert [b.cycle_id for b in boards(sub)] == ["c1", "c2"] and broker.board_stats is last


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


async def test_live_a_cancelled_wait_leaves_the_boards_refresh_running(
        clock: SimClock, bus: Bus) -> None:
    worker = GatedWorker()
    broker = live_broker(clock, bus, worker)
    sub = bus.subscribe("test", [Leaderboard])
    await PnLStep(broker)(ctx_of(clock, 1))
    waiter = asyncio.create_task(broker.board_published())  # a cycle that then times out
    await settle()
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    worker.gate.set()
    await broker.board_published()  # still the one to wait for
    assert [b.cycle_id for b in boards(sub)] == ["c1"] and worker.finished == 1


async def test_live_a_board_that_cannot_be_shown_is_logged_and_the_next_one_is_published(
        clock: SimClock, bus: Bus) -> None:
    worker = GatedWorker()
    worker.gate.set()
    broker = live_broker(clock, bus, worker)
    sub = bus.subscribe("test", [Leaderboard])

    def broken_console(board: Leaderboard) -> None:
        raise OSError("stdout closed")

    with capture_logs() as logs:
        broker.publish_board_when_refreshed("c1", on_board=broken_console)
        await broker.board_published()  # does not raise: the next cycle and a stop go on
    assert [e["event"] for e in logs if e["event"].startswith("leaderboard.")] == [
        "leaderboard.publish_failed"]
    await PnLStep(broker)(ctx_of(clock, 2))
    await broker.board_published()
    assert [b.cycle_id for b in boards(sub)] == ["c1", "c2"]
