"""What the traders, the page and the leaderboard see of the paper accounts (read-only views).

`AccountViews` reads the ledger at the marks: the prompt's account and positions, the recent
fills, and the whole-account `AccountSnapshot` row (taking one also tracks the account's peak
equity). `BoardView` ranks the accounts: point estimates now, CIs and pairwise comparisons from
the last `refresh_board_stats`; `publish_when_refreshed` publishes a cycle's leaderboard once
the refresh of its own statistics is done, without holding up the cycle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from engine import metrics
from engine.bus import Bus
from engine.clock import Clock
from engine.events import AccountSnapshot, Leaderboard
from engine.paper.accounts import Account
from engine.paper.board_worker import BoardWorker
from engine.paper.leaderboard import BoardStats, point_rows, rank_rows
from engine.paper.ledger import Ledger
from engine.paper.marks import Marks
from engine.settings import LeaderboardSettings

log = structlog.get_logger("broker")


class AccountViews:
    """Read-only views of the ledger's accounts at the current marks."""

    __slots__ = ("clock", "ledger", "marks")

    def __init__(self, ledger: Ledger, marks: Marks, clock: Clock) -> None:
        self.ledger, self.marks, self.clock = ledger, marks, clock

    def account_view(self, trader: str) -> dict[str, Any]:
        """Return the account as the trader's prompt shows it."""
        acc = self.ledger.account(trader)
        marks = self.marks.for_account(acc)
        equity = acc.equity(marks)
        st = acc.state
        exposure = acc.exposure(marks)
        return {
            "capital": acc.capital, "cash": round(acc.cash, 2),
            "available": round(acc.cash, 2), "margin_used": round(acc.margin(), 2),
            "unrealized_pnl": round(acc.unrealized(marks), 2), "equity": round(equity, 2),
            "realized_pnl": round(acc.realized_pnl, 2), "fees": round(acc.fees, 2),
            "funding": round(acc.funding, 2),
            "return_pct": round((equity - acc.capital) / acc.capital * 100, 3),
            "peak_equity": round(st.peak_equity, 2),
            "drawdown_pct": round(max(0.0, (st.peak_equity - equity) / st.peak_equity * 100), 3)
            if st.peak_equity else 0.0,
            "exposure": round(exposure, 2),
            "exposure_pct": round(exposure / equity * 100, 2) if equity > 0 else None,
            "open_positions": len(acc.positions), "trades": st.trades, "wins": st.wins,
            "suspended_until": st.suspended_until, "stopped": st.stopped,
        }

    def snapshot(self, trader: str, cause: str, cycle_id: str | None,
                 ts: float | None = None) -> AccountSnapshot:
        """Return `trader`'s whole account at `ts` (now): money, positions, baselines, counters."""
        acc = self.ledger.account(trader)
        return self.snapshot_at(acc, self.marks.for_account(acc), cause, cycle_id,
                                self.clock.time() if ts is None else ts)

    def snapshot_at(self, acc: Account, marks: dict[str, float], cause: str,
                    cycle_id: str | None, ts: float) -> AccountSnapshot:
        """Return `acc`'s snapshot valued at `marks` (taken once by the caller) at `ts`."""
        pnl = {s: p.unrealized(marks[s]) for s, p in acc.positions.items()}
        upnl = sum(pnl.values())  # as Account.unrealized: the same terms in the same order
        margin = acc.margin()
        equity = acc.cash + margin + upnl
        acc.observe_equity(equity)
        st = acc.state
        metrics.EQUITY.labels(acc.trader).set(equity)
        positions = []
        for s, p in acc.positions.items():
            d = p.to_dict()
            d["mark"], d["unrealized_pnl"] = marks[s], pnl[s]
            positions.append(d)
        return AccountSnapshot(
            trader=acc.trader, cash=acc.cash, margin=margin, unrealized_pnl=upnl, equity=equity,
            realized_pnl=acc.realized_pnl, fees=acc.fees, funding=acc.funding,
            peak_equity=st.peak_equity,
            drawdown_pct=(st.peak_equity - equity) / st.peak_equity * 100
            if st.peak_equity else 0.0,
            return_pct=(equity - acc.capital) / acc.capital * 100,
            positions=tuple(positions), state={"capital": acc.capital, **st.to_dict()},
            cause=cause, cycle_id=cycle_id, ts=ts)

    def positions_view(self, trader: str) -> tuple[dict[str, Any], ...]:
        """Return each open position as the trader's prompt shows it."""
        acc = self.ledger.account(trader)
        out = []
        for s, p in acc.positions.items():
            mark = self.marks.get(s, p.entry_price)
            upnl = p.unrealized(mark)
            out.append({
                "symbol": s, "side": p.side, "qty": p.qty, "entry_price": p.entry_price,
                "mark": mark, "leverage": p.leverage, "margin": round(p.margin, 2),
                "notional": round(p.notional(mark), 2), "unrealized_pnl": round(upnl, 2),
                "roe_pct": round(upnl / p.margin * 100, 2) if p.margin > 0 else None,
                "stop_loss": p.stop_loss, "take_profit": p.take_profit,
                "liquidation_price": p.liquidation_price, "open_reason": p.open_reason,
                "opened_at": p.opened_at, "fees": round(p.fees, 4), "funding": round(p.funding, 4),
            })
        return tuple(out)

    def recent_fills(self, trader: str, n: int) -> tuple[dict[str, Any], ...]:
        """Return the trader's last `n` fills, oldest first."""
        fills = self.ledger.account(trader).state.recent_fills
        return tuple(dict(f) for f in fills[-n:]) if n > 0 else ()


class BoardView:
    """The leaderboard of the ledger's accounts, published on the bus."""

    __slots__ = ("_publishing", "bus", "clock", "ledger", "marks", "null_trader", "settings",
                 "stats", "worker")

    def __init__(self, ledger: Ledger, marks: Marks, bus: Bus, clock: Clock,
                 settings: LeaderboardSettings, worker: BoardWorker | None = None) -> None:
        self.ledger, self.marks, self.bus, self.clock = ledger, marks, bus, clock
        self.settings = settings
        self.stats: BoardStats | None = None  # CIs and pairwise of the last refresh
        # the trader whose strategy is `random` (the null hypothesis; the first by name if
        # several), set by the app; each other leaderboard row then shows P(trader beats random)
        self.null_trader: str | None = None
        # where the bootstrap runs (engine.paper.board_worker): a thread unless told otherwise
        self.worker = worker or BoardWorker(processes=False)
        self._publishing: asyncio.Task[Leaderboard | None] | None = None

    def _returns(self) -> tuple[dict[str, tuple[tuple[float, float], ...]],
                                dict[str, float | None]]:
        """Return each account's kept (ts, return) pairs and periods per year, as of now."""
        series = {t: tuple(a.state.returns.recent) for t, a in self.ledger.items()}
        ppy = {t: a.state.returns.periods_per_year() for t, a in self.ledger.items()}
        return series, ppy

    async def refresh_board_stats(self) -> BoardStats:
        """Recompute the CIs and pairwise comparisons from the kept returns, off the loop."""
        series, ppy = self._returns()  # numpy bootstrap work: ticks and triggers never wait
        self.stats = await self.worker.compute(series, ppy, self.settings)
        return self.stats

    def publish_when_refreshed(self, cycle_id: str | None, *, log_rows: bool = True,
                               on_board: Callable[[Leaderboard], None] | None = None
                               ) -> asyncio.Task[Leaderboard | None]:
        """Refresh the statistics from the returns kept now, then publish the leaderboard of
        `cycle_id` (and hand it to `on_board`): its points and time as of now, its CIs and
        ranks from that refresh. The caller goes on meanwhile; a refresh that fails is logged
        (`leaderboard.refresh_failed`) and the board shows the last statistics; a board that
        cannot be built or shown is logged (`leaderboard.publish_failed`) and skipped. Call
        `published()` first: one refresh at a time, boards in cycle order."""
        points, now = self._points(), self.clock.time()
        series, ppy = self._returns()

        async def refresh_then_publish() -> Leaderboard | None:
            try:
                self.stats = await self.worker.compute(series, ppy, self.settings)
            except Exception as exc:  # isolation boundary: shown statistics only, never stored
                log.error("leaderboard.refresh_failed", cycle_id=cycle_id, error=repr(exc))
            try:
                board = self._board(cycle_id, points, now, self.stats)
                self._announce(board, log_rows=log_rows)
                if on_board is not None:
                    on_board(board)
            except Exception:  # isolation boundary: a board not shown holds up no cycle or stop
                log.exception("leaderboard.publish_failed", cycle_id=cycle_id)
                return None
            return board

        self._publishing = asyncio.create_task(refresh_then_publish(), name="leaderboard")
        return self._publishing

    async def published(self) -> None:
        """Wait until the leaderboard `publish_when_refreshed` started (if any) is published."""
        task = self._publishing
        if task is not None:
            await asyncio.shield(task)  # a waiter cancelled (a cycle timed out) leaves it be
            if self._publishing is task:
                self._publishing = None

    def _points(self) -> tuple[dict[str, Any], ...]:
        marks = {s: self.marks.get(s, p.entry_price)
                 for acc in self.ledger.values() for s, p in acc.positions.items()}
        return point_rows(self.ledger.values(), marks, self.clock.time(),
                          min_returns=self.settings.min_returns)

    def leaderboard(self, cycle_id: str | None, *, publish: bool = True,
                    log_rows: bool = True) -> Leaderboard:
        """Return the leaderboard; when `publish`, also publish it and (when `log_rows`) log it
        as `leaderboard`.

        Point estimates are current; CIs and P(A beats B) are those of the last refresh.
        """
        board = self._board(cycle_id, self._points(), self.clock.time(), self.stats)
        if publish:
            self._announce(board, log_rows=log_rows)
        return board

    def _board(self, cycle_id: str | None, points: Sequence[Mapping[str, Any]], now: float,
               stats: BoardStats | None) -> Leaderboard:
        bs = self.settings
        rows = rank_rows(points, stats=stats, min_coverage=bs.min_coverage, beats_p=bs.beats_p,
                         null=self.null_trader)
        pairs = stats.ranked_pairs([r["trader"] for r in rows]) if stats is not None else ()
        return Leaderboard(cycle_id, rows, now, pairwise=pairs,
                           stats=dict(stats.info) if stats is not None else {})

    def _announce(self, board: Leaderboard, *, log_rows: bool) -> None:
        self.bus.publish(board)
        if log_rows:
            log.info("leaderboard", cycle_id=board.cycle_id, rows=list(board.rows),
                     pairwise=list(board.pairwise))
