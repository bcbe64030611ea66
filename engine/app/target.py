"""What the control API sees of a running engine: status, jobs, trigger, pause, traders, health."""

from __future__ import annotations

from typing import Any

from engine import __version__
from engine.app.observe import trader_statuses


class ControlTarget:
    """The control API's view of one engine (reads state; commands go through the scheduler)."""

    def __init__(self, engine: Any) -> None:  # an engine.app.engine.Engine
        self._e = engine

    def status(self) -> dict[str, Any]:
        feed = self._e.feed.status()
        return {
            "state": self._state(feed),
            "halted": self._e.gate.describe(),  # `halted: storage (<reason>)` or None
            "version": __version__,
            "dry_run": self._e.dry_run,
            "paused": self._e.scheduler.paused,
            "feed": feed,
            "price_age_s": feed["price_age"],
            "stale": feed["stale"],
            "jobs": self._e.scheduler.states(),
            "writer": self._e.writer.status() if self._e.writer is not None else None,
            "bus": self._e.bus.stats(),
            "replay": self._e.progress.status() if self._e.progress is not None else None,
            "arena": {"mode": self._e.run_mode, "source": self._e.run_source},
            # accounts rebuilt at start because their snapshot contradicted the committed rows
            "reconciled": getattr(self._e.recovery, "reconciled", None) or {},
            "tasks": self._tasks(),
        }

    def _state(self, feed: dict[str, Any]) -> str:
        """The engine's state; `connecting` while it starts and the live feed is not yet in."""
        if self._e.state == "starting" and feed.get("state") == "connecting":
            return "connecting"
        return str(self._e.state)

    def _tasks(self) -> dict[str, Any]:
        """Supervised tasks' states, and the crashes that ended the engine."""
        out: dict[str, Any] = {name: t.status() for name, t in self._e.tasks.items()}
        for name, error in self._e.crashes.items():
            out[name] = {"state": "crashed", "last_error": error}
        return out

    def jobs(self) -> list[dict[str, Any]]:
        states: list[dict[str, Any]] = self._e.scheduler.states()
        return states

    def next_run(self) -> dict[str, Any]:
        job = self._e.scheduler.jobs[self._e.cycle_job_name]
        nxt = job.state.next_run
        now = self._e.clock.time()
        left = None if nxt is None else max(0.0, nxt - now)
        return {
            "job": job.name,
            "next_run": job.state.as_dict()["next_run"],
            "seconds_until_next_run": None if left is None else round(left, 3),
            "minutes_until_next_run": None if left is None else round(left / 60, 3),
        }

    async def trigger(self) -> tuple[bool, str, dict[str, Any]]:
        if self._e.state != "running":
            return False, f"engine is {self._e.state}", {}
        answer: tuple[bool, str, dict[str, Any]] = await self._e.scheduler.trigger(
            self._e.cycle_job_name)
        return answer

    def pause(self) -> bool:
        return bool(self._e.scheduler.pause())

    def resume(self) -> bool:
        return bool(self._e.scheduler.resume())

    def leaderboard(self) -> dict[str, Any]:
        board = self._e.broker.leaderboard(None, publish=False)
        return {"ts": board.ts, "rows": list(board.rows), "pairwise": list(board.pairwise),
                "stats": dict(board.stats)}

    def trader(self, name: str) -> dict[str, Any] | None:
        if name not in self._e.broker.accounts:
            return None
        return {
            "name": name,
            "account": self._e.broker.account_view(name),
            "positions": list(self._e.broker.positions_view(name)),
            "recent_fills": list(self._e.broker.recent_fills(name, 20)),
            "decisions": list(self._e.decisions.previous(name)),
        }

    def traders(self) -> list[dict[str, Any]]:
        by_name = {t.name: t for t in self._e.settings.traders}
        accounts = self._e.broker.accounts
        # The capital returns are measured against (the page's legend): the account's, else the
        # configured one (a disabled trader has no account).
        return [{"name": name, "status": status, "detail": detail,
                 "strategy": by_name[name].strategy, "provider": by_name[name].provider,
                 "model": by_name[name].model,
                 "starting_capital": (accounts[name].capital if name in accounts
                                      else float(by_name[name].starting_capital))}
                for name, (status, detail) in trader_statuses(self._e).items()]

    def symbols(self) -> dict[str, dict[str, float]]:
        out = {}
        for symbol in self._e.settings.feed.symbols:
            f = self._e.broker.filter_for(symbol)
            out[symbol] = {"tick_size": f.tick_size, "step_size": f.step_size}
        return out

    def health(self) -> tuple[bool, dict[str, Any]]:
        feed = self._e.feed.status()
        stale = feed["stale"]
        writer = self._e.writer.status() if self._e.writer is not None else None
        backlog = writer.get("backlog", 0) if writer else 0
        problems = []
        if self._e.options.replay is None and not feed.get("connected"):
            problems.append("feed disconnected")
        if stale:
            problems.append(f"stale prices: {', '.join(stale)}")
        if (halted := self._e.gate.describe()) is not None:
            problems.append(halted)
        if writer and backlog > self._e.settings.database.batch_rows * 10:
            problems.append(f"writer backlog {backlog} rows")
        limit = self._e.settings.database.unhealthy_after_seconds
        if writer and writer["stalled_s"] >= limit:  # wall clock, rows in flight included
            problems.append(f"nothing committed for {writer['stalled_s']:.0f}s with {backlog} "
                            f"rows waiting (limit {limit:g}s)")
        for name, task in self._tasks().items():
            if task["state"] not in ("starting", "running", "stopped"):
                problems.append(f"{name} {task['state']}: {task['last_error']}")
        return not problems, {
            "state": self._state(feed),
            "halted": self._e.gate.describe(),
            "problems": problems,
            "feed_connected": feed.get("connected"),
            "stale": stale,
            "writer_backlog": backlog,
            "tasks": self._tasks(),
        }

    def equity_history(self) -> dict[str, list[tuple[float, float]]]:
        return {k: v.points() for k, v in self._e.equity.items()}
