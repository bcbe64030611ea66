"""The engine: builds every component, supervises them in one TaskGroup, stops them in order.

Start-up: settings → logging → database (migrations, recovery) → writer → book, feed, broker,
traders → cycle and jobs → control API. Shutdown (SIGINT/SIGTERM): stop firing → let a running
cycle finish within `shutdown_grace_seconds` (then cancel it) → stop the producers → final
snapshots → the writer flushes every pending row → the database stops. A second SIGINT cancels
the running cycle at once; the writer still flushes (each batch is one transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import structlog

from engine import __version__, metrics
from engine.app.build import (
    build_alerts,
    build_components,
    load_exchange_filters,
    open_store,
    preload,
    providers_to_warm,
)
from engine.app.equity import EquityCurve
from engine.app.memory import GarbageCollector, freeze_startup_heap, pin_malloc_threshold, thaw_heap
from engine.app.observe import engine_view
from engine.app.options import Options as Options  # re-exported: run.py and tests use it
from engine.app.pidfile import PidFiles
from engine.app.resume import start_after
from engine.app.supervise import Supervised, fatal, last_flush
from engine.app.target import ControlTarget
from engine.bus import Bus
from engine.clock import Clock, LiveClock, SimClock
from engine.events import AccountSnapshot, RunStarted, new_id
from engine.halt import TradingGate
from engine.loop_monitor import LoopMonitor
from engine.market.pacing import BY_HAND, RecordedCycles
from engine.scheduler import Job, Scheduler, select_jobs
from engine.settings import JobSettings, Secrets, Settings
from engine.traders.warmup import prewarm, warm_up

log = structlog.get_logger("app")

_BOARD_AT_STOP_S = 10.0  # how long a stop waits for the last cycle's leaderboard refresh


def _file_sha256(path: str) -> str:
    """Return the sha256 hex digest of a file (a replay's source)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class _Shutdown(Exception):
    """Raised inside the supervision group to stop it after an orderly shutdown."""


class Engine:
    """One arena: owns every component and implements the control API's target."""

    def __init__(self, settings: Settings, secrets: Secrets, options: Options) -> None:
        self.settings = settings
        self.secrets = secrets
        self.options = options
        self.dry_run = options.dry_run or settings.engine.dry_run
        self.bus = Bus()
        self.clock: Clock = LiveClock()
        if options.replay:
            from engine.market.recording import first_frame_time

            # Simulated time starts at the recording's first frame and follows its frames.
            start = first_frame_time(options.replay)
            if start is None:  # preflight.check_replay refuses a recording with no frame first
                raise ValueError(f"--replay {options.replay}: no frame to start from")
            self.clock = SimClock(start)
        self._warmed = asyncio.Event()  # a replay starts once the LLM clients are warm (`_ready`)
        self._prewarm: asyncio.Future[dict[str, float]] | None = None  # started by `run`
        self.state = "starting"
        self.gate = TradingGate()  # halted while storage cannot record (engine.halt)
        self.cycle_job_name = "trading_cycle"
        self.once_result: dict[str, Any] | None = None
        self._stop = asyncio.Event()
        self._interrupts = 0
        self._background: set[asyncio.Future[Any]] = set()
        self.equity: dict[str, EquityCurve] = {}  # the newest 5000 points each (app.equity)
        self.tasks: dict[str, Supervised] = {}  # restarted on a crash (the writer)
        self.crashes: dict[str, str] = {}  # crashes that ended the engine, by task
        self.loop_monitor = LoopMonitor(settings.engine)
        self.gc: GarbageCollector | None = None  # started with the other services (app.memory)
        self.fatal_error: str | None = None
        self.target = ControlTarget(self)
        self.db: Any = None
        self.writer: Any = None
        self.recovery: Any = None  # the RecoveredState the accounts resumed from
        self.run_mode: str = "live"  # RunStarted.mode / runs.mode: live | replay | backtest
        self.run_source: str | None = None  # replay: sha256 of the file
        self.run_id: Any = None  # RunStarted.run_id of this run (its report's key)
        self.progress: Any = None  # a replay's ReplayProgress
        self.resume_at: float | None = None  # --resume: the replay skips frames up to this
        self.report: Any = None  # the report written on exit (engine.report.files.Report)

    # ------------------------------------------------------------------ building

    async def _open_store(self) -> dict[str, Any]:
        """Open the database and the writer; return the recovered accounts (nothing in dry-run)."""
        if self.dry_run:
            log.info("store.disabled", reason="dry_run")
            return {}
        if self.options.replay:  # a replay's arena is its file's: never the live accounts
            self.run_mode, self.run_source = "replay", await asyncio.to_thread(
                _file_sha256, self.options.replay)
        if self.options.backtest_source:  # a backtest's arena is its window's
            self.run_mode, self.run_source = "backtest", self.options.backtest_source
        self.db, self.writer, self.recovery = await open_store(
            self.settings, self.secrets, self.bus, self.clock, fresh=self.options.fresh,
            mode=self.run_mode, source=self.run_source, gate=self.gate,
            accept_reconcile=self.options.accept_reconcile,
        )
        if self.options.replay and self.options.resume:  # after its last persisted instant
            self.resume_at = await start_after(self)
        return dict(self.recovery.accounts)

    def _arena_id(self) -> Any:
        """Return the run_id of the run that began the resumed arena (None: this run begins one)."""
        recovery = getattr(self, "recovery", None)
        if self.options.fresh or recovery is None:
            return None
        return recovery.arena_run_id

    def _build(self, recovered: dict[str, Any]) -> None:
        parts = build_components(
            self.settings, self.secrets, self.options, self.bus, self.clock, recovered,
            dry_run=self.dry_run, dsn=self.db.dsn if self.db is not None else None,
            on_fatal=self._fatal, gate=self.gate)
        self.llm_session, self.cycle_starts = parts.llm_session, parts.cycle_starts
        self.book, self.candles, self.feed = parts.book, parts.candles, parts.feed
        self.broker, self.strategies = parts.broker, parts.strategies
        self.decisions, self.cycle = parts.decisions, parts.cycle
        self.scheduler = Scheduler(
            self._jobs(), self.clock, self.bus, hold_clock=self.options.replay is not None,
            gate=self.gate,
        )
        self.gate.listen(self._note_halt)
        self._equity_sub = self.bus.subscribe("app.equity", [AccountSnapshot], capacity=10_000)
        self.alerts = build_alerts(self)  # None with --no-alerts or no webhook
        metrics.ENGINE.attach(partial(engine_view, self))  # read at each /metrics scrape

    def _note_halt(self, halted: bool, reason: str | None) -> None:
        """Note a halt or a resume in the recording (`--record`), at its engine time."""
        recorder = getattr(self.feed, "recorder", None)
        if recorder is not None:
            recorder.write_record("halt", {"halted": halted, "reason": reason}, self.clock.time())

    def _jobs(self) -> list[Job]:
        bodies: dict[str, Callable[[str], Awaitable[dict[str, Any] | None]]] = {
            "trading_cycle": self.cycle,
            "health_check": self.health_job,
            "account_sync": self.account_sync_job,
        }
        opts = self.options
        chosen = select_jobs(self.settings.jobs, set(opts.include_tags), set(opts.exclude_tags))
        if opts.once:
            chosen = []  # --once runs one cycle by hand and nothing on a schedule
        if self.cycle_starts:  # a session replay fires its recorded cycles, none on schedule
            chosen = [c.model_copy(update=BY_HAND) if c.run == "trading_cycle" else c
                      for c in chosen]
        jobs = [Job(j, bodies[j.run]) for j in chosen]
        cycle_jobs = [j for j in jobs if j.settings.run == "trading_cycle"]
        if cycle_jobs:
            self.cycle_job_name = cycle_jobs[0].name
        else:  # no scheduled cycle (tags, --once, a session replay): one fired by hand only
            manual = JobSettings(name="trading_cycle", run="trading_cycle", timeout_seconds=240,
                                 **BY_HAND)
            jobs.append(Job(manual, self.cycle))
        log.info("jobs.selected", jobs=[j.name for j in jobs])
        return jobs

    # ------------------------------------------------------------------ jobs

    async def health_job(self, trigger: str) -> dict[str, Any]:
        ok, report = self.target.health()
        (log.info if ok else log.warning)("health.report", ok=ok, **report)
        return {"ok": ok, **report}

    async def account_sync_job(self, trigger: str) -> dict[str, Any]:
        self.broker.mark_all()
        if not self.dry_run:
            self.broker.publish_snapshots("sync", None)
        return {"accounts": len(self.broker.accounts)}

    # ------------------------------------------------------------------ running

    async def run(self) -> int:
        """Run until stopped; return the process exit code."""
        pin_malloc_threshold()  # long runs: large numpy temporaries mapped, not heap (app.memory)
        self.install_signals()
        # What building imports, and the SDKs' first calls, in a thread while the database
        # starts (`_ready` waits for it).
        self._prewarm = asyncio.ensure_future(self._early_start_up())

        try:
            return await self._run()
        finally:
            if self._prewarm is not None and not self._prewarm.done():
                self._prewarm.cancel()  # stopped before ready (its thread ends by itself)
                await asyncio.gather(self._prewarm, return_exceptions=True)

    async def _early_start_up(self) -> dict[str, float]:
        await asyncio.to_thread(preload)
        return await prewarm(providers_to_warm(self.settings, self.secrets, self.options))

    async def _run(self) -> int:
        from engine.store.reconcile import RecoveryRefused
        from engine.store.spill import SpillReplayFailed

        try:
            recovered = await self._open_store()
        except (RecoveryRefused, SpillReplayFailed) as exc:
            for line in exc.args:
                log.error("recovery.refused" if isinstance(exc, RecoveryRefused)
                          else "spill.replay_failed", detail=line)
            if self.db is not None:
                await self.db.close()
            return 1
        self.pid = PidFiles(self.settings)  # arena.pid and control.url in the data directory
        try:
            self._build(recovered)
            if self.settings.broker.use_exchange_info and not self.options.replay:
                await load_exchange_filters(self.settings, self.clock, self.broker)
            code = await self._supervise()
            if self.db is not None and self.settings.report.on_exit and self.run_id is not None:
                from engine.report.files import report_on_exit

                self.report = await report_on_exit(self.db.dsn, self.settings,
                                                   str(self.run_id), console=self.options.console)
            return code
        finally:
            self.pid.release()
            llm_session = getattr(self, "llm_session", None)
            if llm_session is not None:
                await llm_session.aclose()  # its summary; the cache's connections
            if self.db is not None:
                await self.db.close()
            if getattr(self, "decisions", None) is not None:
                await self.decisions.aclose()  # the SDKs' HTTP sessions
            if getattr(self, "broker", None) is not None:
                self.broker.board.worker.close()  # the leaderboard's worker process
            thaw_heap()  # what the start-up froze can be collected again (app.memory)

    async def _supervise(self) -> int:
        writer_task = None
        if self.writer is not None:  # outside the group: it outlives the producers to flush
            from engine.store.writer import StorageFatal

            self.tasks["writer"] = Supervised("writer", self.writer.run, self.clock,
                                              on_fatal=self._fatal,
                                              final=partial(last_flush, self.writer),
                                              fatal_errors=(StorageFatal,))
            writer_task = asyncio.create_task(self.tasks["writer"].run(), name="writer")
        if not self.dry_run:
            self.bus.publish(RunStarted(
                run_id=(run_id := self.options.run_id or new_id()),
                started_at=self.clock.time(), version=__version__,
                settings_hash=self.settings.digest(), fresh=self.options.fresh,
                dry_run=self.dry_run, mode=self.run_mode, source=self.run_source,
                arena_id=self._arena_id(), labels=self.options.labels))
            self.broker.publish_snapshots("start", None)
            self.run_id = run_id
            cache = getattr(getattr(self, "llm_session", None), "cache", None)
            if cache is not None:  # its hit rows name the run too
                cache.run_id, cache.arena_id = run_id, self._arena_id() or run_id
        code = 0
        try:
            async with asyncio.TaskGroup() as tg:
                for name, aw in (("market", self._market()), ("broker", self.broker.run()),
                                 ("equity", self._track_equity()),
                                 ("loop_monitor", self.loop_monitor.run())):
                    tg.create_task(fatal(name, aw, self.crashes), name=name)
                if self.settings.engine.gc_interval_seconds > 0:
                    self.gc = GarbageCollector(self.clock, self.settings.engine.gc_interval_seconds)
                    tg.create_task(fatal("gc", self.gc.run(), self.crashes), name="gc")
                if self.alerts is not None:
                    tg.create_task(fatal("alerts", self.alerts.run(), self.crashes), name="alerts")
                if self.cycle_starts:  # a session replay: each recorded cycle at its instant
                    cycles = RecordedCycles(self.cycle_starts, self.clock, partial(
                        self.scheduler.trigger, self.cycle_job_name, wait=False))
                    tg.create_task(fatal("recorded_cycles", cycles.run(), self.crashes))
                if self.settings.control.enabled and not self.options.once:
                    from engine.web.control import ControlServer

                    self.control = ControlServer(
                        self.settings.control, self.target, self.bus, self.secrets.control_token
                    )
                    tg.create_task(fatal("control", self.control.run(), self.crashes),
                                   name="control")
                    tg.create_task(self.pid.publish(self.control, self.settings.control.host),
                                   name="control.url")
                tg.create_task(self._lifecycle(tg), name="lifecycle")
        except* _Shutdown:
            pass
        finally:
            try:  # the last cycle's leaderboard (shown only: it never holds up a stop for long)
                await asyncio.wait_for(self.broker.board_published(), _BOARD_AT_STOP_S)
            except TimeoutError:
                log.warning("leaderboard.not_published", waited_s=_BOARD_AT_STOP_S)
            await self._final_snapshots()
            if writer_task is not None:
                writer_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer_task
                if self.tasks["writer"].state == "failed":
                    await last_flush(self.writer)  # one more try: whatever it can still write
        if self.options.once:
            ok = (self.once_result or {}).get("status") == "ok"
            code = 0 if ok else 1
        if self.fatal_error is not None:
            code = 1
        if self.writer is not None and self.writer.fatal is not None:
            code = 1  # rows went to the last-resort file: never exit 0 after that
        log.info("engine.stopped", exit_code=code)
        return code

    async def _market(self) -> None:
        if self.options.replay:
            from engine.market.replay import Replay

            replay = Replay(
                self.options.replay,
                self.feed,
                self.clock,  # type: ignore[arg-type]
                speed=self.options.speed, path_wanted=self.broker.book_triggers,
                start_after=self.resume_at,
                gate=self.gate,
            )
            from engine.market.progress import ReplayProgress

            self.progress = ReplayProgress(replay)  # /status shows it too
            await self._warmed.wait()  # no simulated time passes while the warm-up thread works
            async with self.progress.shown(bar=self.options.console and sys.stdout.isatty()):
                await replay.run()
            log.info("replay.finished", path=self.options.replay)
            # Let the last cycle that the final frames fired finish, then stop.
            await self.scheduler.wait_idle(self.settings.engine.shutdown_grace_seconds)
            self.request_stop("replay finished")
            await asyncio.get_running_loop().create_future()
        else:
            await self.feed.run()

    async def _lifecycle(self, tg: asyncio.TaskGroup) -> None:
        await self._ready()
        # Jobs start firing only once prices are in, so the first cycle has a market to see.
        await self.scheduler.start(lambda run: tg.create_task(fatal("scheduler", run, self.crashes),
                                                              name="scheduler"))
        if self.options.once and self.state == "running":
            await self._wait_prices()
            started, reason, summary = await self.scheduler.trigger(self.cycle_job_name)
            self.once_result = summary if started else {"status": "failed", "error": reason}
            self.request_stop("--once finished")
        await self._stop.wait()
        await self._orderly_stop()
        raise _Shutdown

    async def _wait_prices(self) -> list[str]:
        """Wait for a fresh price of every symbol (engine.ready_wait_seconds at most); return
        the symbols still stale."""
        feed, end = self.settings.feed, self.clock.time() + self.settings.engine.ready_wait_seconds
        while (stale := self.book.stale(self.clock.time(), feed.max_price_age_seconds,
                                        feed.symbols)) and not self._stop.is_set() \
                and self.clock.time() < end:
            await self.clock.sleep(0.05)
        return stale

    async def _ready(self) -> None:
        """Warm the LLM clients up (in a thread; a replay starts only then, so it never races
        ahead of the start-up), wait for every symbol's price, then say so."""
        try:
            if self._prewarm is not None:
                await self._prewarm
            await warm_up(self.strategies)
            if self.options.replay:
                freeze_startup_heap()  # before the replay's first frame (app.memory)
        finally:
            self._warmed.set()
        stale = await self._wait_prices()
        if self._stop.is_set():
            return  # stopped before it was ready: never say ready after stopping
        self.state = "running"
        log.info("engine.ready", traders=sorted(self.strategies), dry_run=self.dry_run,
                 paused=self.scheduler.paused, stale=stale)
        if not self.options.replay:
            freeze_startup_heap()  # once, off the path to ready (app.memory)

    async def _orderly_stop(self) -> None:
        self.state = "stopping"
        grace = self.settings.engine.shutdown_grace_seconds
        self.scheduler.stop_firing()
        if self.scheduler.busy:
            log.info("engine.waiting_for_cycle", grace_s=grace)
            if not await self.scheduler.wait_idle(grace):
                log.warning("engine.cancelling_cycle", reason="grace time over")
                await self.scheduler.cancel_running()

    async def _final_snapshots(self) -> None:
        if not self.dry_run and getattr(self, "broker", None) is not None:
            self.broker.mark_all()
            self.broker.publish_snapshots("shutdown", None)

    async def _track_equity(self) -> None:
        async for event in self._equity_sub:
            assert isinstance(event, AccountSnapshot)
            series = self.equity.get(event.trader)
            if series is None:
                series = self.equity[event.trader] = EquityCurve(5000)
            series.append(event.ts, event.equity)  # the oldest point is overwritten, O(1)

    # ------------------------------------------------------------------ signals

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self._on_usr1)
        loop.add_signal_handler(signal.SIGUSR2, self._on_usr2)
        loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)

    def _on_usr1(self) -> None:
        log.info("signal.received", signal="SIGUSR1", action="manual cycle")
        if self.state != "running":
            log.warning("job.skipped", job=self.cycle_job_name, reason=f"engine {self.state}",
                        trigger="manual")
            return
        self._spawn(self.scheduler.trigger(self.cycle_job_name, wait=False))

    def _on_usr2(self) -> None:
        paused = self.scheduler.toggle_pause()
        log.info("signal.received", signal="SIGUSR2", action="pause" if paused else "resume")

    def _on_sigterm(self) -> None:
        log.info("signal.received", signal="SIGTERM", action="stop")
        self.request_stop("SIGTERM")

    def _on_sigint(self) -> None:
        self._interrupts += 1
        log.info("signal.received", signal="SIGINT",
                 action="stop" if self._interrupts == 1 else "cancel the running cycle")
        if self._interrupts == 1:
            self.request_stop("SIGINT")
            return
        log.warning("engine.interrupted", detail="second SIGINT: cancelling at once")
        self._spawn(self.scheduler.cancel_running())

    def _spawn(self, coro: Any) -> None:
        """Run a signal's follow-up work, keeping a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _fatal(self, reason: str) -> None:
        """Stop the engine because a supervised task gave up; it exits with code 1."""
        self.fatal_error = reason
        log.error("engine.fatal", reason=reason)
        self.request_stop(f"fatal: {reason}")

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            log.info("engine.stopping", reason=reason)
            self._stop.set()
