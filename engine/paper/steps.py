"""The paper-account steps of the cycle: risk review, execution, marking and the leaderboard."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from engine import metrics
from engine.bus import Bus
from engine.cycle import CycleContext, SkipCycle
from engine.events import DecisionRejected, OrderFilled
from engine.paper.leaderboard import render_table

log = structlog.get_logger("cycle")


class RiskStep:
    """Check every action against the risk rules; refusals name their rule."""

    name = "risk"

    def __init__(self, broker: Any, bus: Bus) -> None:
        self._broker, self._bus = broker, bus

    async def __call__(self, ctx: CycleContext) -> None:
        # The decisions are in: a replay reviews them against the book as it was live now.
        await ctx.pace.wait(ctx.cycle_id, "risk")
        self._bus.flush()  # the trigger watch catches up with the book first (see ExecuteStep)
        ctx.pace.mark(ctx.cycle_id, "risk")
        for trader, outcome in ctx.outcomes.items():
            approved, rejected = self._broker.review(
                trader, outcome.decision, ctx.snapshot, ctx.started_at, ctx.cycle_id
            )
            ctx.approved[trader] = list(approved)
            ctx.rejections.extend(rejected)
            for r in rejected:
                metrics.REJECTIONS.labels(trader, r.rule).inc()
                log.info(
                    "decision.rejected",
                    trader=trader,
                    symbol=r.symbol,
                    action=r.action,
                    rule=r.rule,
                    detail=r.detail,
                )
                if not ctx.dry_run:
                    self._bus.publish(r)
        ctx.summary.update(
            approved=sum(len(a) for a in ctx.approved.values()), rejected=len(ctx.rejections)
        )


class ExecuteStep:
    """Fill the approved actions on the paper accounts (nothing in dry-run)."""

    name = "execution"

    def __init__(self, broker: Any) -> None:
        self._broker = broker

    async def __call__(self, ctx: CycleContext) -> None:
        if self._broker.gate.halted:  # storage cannot record fills: none is made
            raise SkipCycle(f"trading {self._broker.gate.describe()}")
        if ctx.dry_run:
            ctx.summary["fills"] = 0
            planned = {
                t: [a.model_dump(mode="json") for a in acts]
                for t, acts in ctx.approved.items()
                if acts
            }
            log.info("cycle.dry_run", would_execute=planned)
            return
        for trader, actions in ctx.approved.items():
            if actions:
                point = f"fill:{trader}"
                await ctx.pace.wait(ctx.cycle_id, point)  # a replay: the live fill's instant
                # Every frame handled so far reaches the broker's trigger watch before the fill
                # (live, the bus hands it over a loop turn later; a replay, at once): a stop
                # on a frame before the fill never sees the position it opens, live or replayed.
                self._broker.bus.flush()
                events = self._broker.execute(trader, actions, ctx.cycle_id, ctx.snapshot)
                if events:  # every event of one execution carries its instant
                    ctx.pace.mark(ctx.cycle_id, point, getattr(events[0], "ts", None))
                ctx.fills += sum(isinstance(e, OrderFilled) for e in events)
                # Fill-time refusals join the review's, so the next prompt reports both.
                ctx.rejections.extend(e for e in events if isinstance(e, DecisionRejected))
        ctx.summary["fills"] = ctx.fills


class PnLStep:
    """Mark every account, publish its snapshot and the leaderboard."""

    name = "pnl"

    def __init__(self, broker: Any, *, console: bool = False, board_every: int = 1,
                 board_in_background: bool = False) -> None:
        self._broker, self._console = broker, console
        # The CIs and P(A beats B) (a bootstrap) are recomputed every `board_every` cycles; in
        # between the leaderboard shows current points and the last CIs (backtests: 12).
        self._board_every, self._cycles = board_every, 0
        # A backtest does not wait for them: they are shown, never stored, so the replay goes on
        # while a worker thread resamples, and a refresh still running when the next one is due
        # is not doubled (the table then shows the CIs of the last one finished).
        self._background = board_in_background
        self._refresh: asyncio.Task[Any] | None = None

    async def __call__(self, ctx: CycleContext) -> None:
        broker = self._broker
        broker.mark_all()
        if not ctx.dry_run:
            broker.publish_snapshots("cycle", ctx.cycle_id)
        refresh = self._cycles % self._board_every == 0
        self._cycles += 1
        if refresh and not self._background:
            # The engine: this cycle's leaderboard is published when the refresh of its own
            # statistics is done (its points as of now), beside what follows; the last
            # cycle's first, so there is one refresh at a time and boards come in order.
            await broker.board_published()
            broker.publish_board_when_refreshed(
                ctx.cycle_id, log_rows=not self._console,
                on_board=self._print if self._console else None)
            if self._console:  # a console's table is printed among its own cycle's lines
                await broker.board_published()
            return
        if refresh and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(broker.refresh_board_stats())
            self._refresh.add_done_callback(_log_failure)
        # In console mode the table is the leaderboard's only trace (no repr of its rows).
        board = broker.leaderboard(ctx.cycle_id, log_rows=not self._console)
        if self._console:
            self._print(board)

    @staticmethod
    def _print(board: Any) -> None:
        if board.rows:
            print(render_table(board.rows, info=board.stats, pairwise=board.pairwise),
                  flush=True)


def _log_failure(task: asyncio.Task[Any]) -> None:
    """Log a background leaderboard refresh that failed (the next one is tried as usual)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("leaderboard.refresh_failed", error=repr(exc))
