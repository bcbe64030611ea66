"""Building an engine's parts from settings: the store (database, writer, recovery) and the rest.

Heavy imports (asyncpg, the SDKs) happen here, when the parts are built, not when the CLI starts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from engine.app.options import Options
from engine.bus import Bus
from engine.clock import Clock, LiveClock
from engine.cycle import TradingCycle
from engine.halt import TradingGate
from engine.settings import Secrets, Settings

if TYPE_CHECKING:  # imported at build time only (see the module doc)
    from engine.market.book import PriceBook
    from engine.market.candles import CandleStore
    from engine.market.feed import Feed
    from engine.market.recording import CycleIds, FrameRecorder, SessionTiming
    from engine.paper.broker import PaperBroker
    from engine.paper.funding import FundingHistory
    from engine.traders.decide import DecisionStep
    from engine.traders.session import LLMSession
    from engine.web.alerts import Alerts
    from strategies.base import Strategy

log = structlog.get_logger("app")

# What building the engine imports lazily (`build_components` and what it calls): imported in a
# thread while Postgres starts (`preload`), so building finds them loaded.
BUILD_MODULES = (
    "engine.events", "engine.market.binance", "engine.market.book", "engine.market.candles",
    "engine.market.feed", "engine.market.pacing", "engine.market.recording",
    "engine.market.snapshot", "engine.paper.board_worker", "engine.paper.broker",
    "engine.paper.funding", "engine.paper.steps", "engine.store.database",
    "engine.store.recovery", "engine.store.rows", "engine.store.writer", "engine.traders.blind",
    "engine.traders.cache", "engine.traders.decide", "engine.traders.kinds",
    "engine.traders.rate_budget", "engine.traders.session", "engine.web.alerts", "strategies.llm",
    "strategies.registry",
)


@dataclass(slots=True)
class Components:
    """The parts one cycle needs, built and wired."""

    book: PriceBook
    candles: CandleStore
    feed: Feed
    broker: PaperBroker
    strategies: dict[str, Strategy]
    decisions: DecisionStep
    cycle: TradingCycle
    llm_session: LLMSession | None = None  # record, replay, cache
    # A session replay's recorded cycles, (start, trigger): fired at those instants
    cycle_starts: tuple[tuple[float, str], ...] = ()


async def open_store(settings: Settings, secrets: Secrets, bus: Bus, clock: Clock, *,
                     fresh: bool, mode: str = "live",
                     source: str | None = None, gate: TradingGate | None = None,
                     accept_reconcile: bool = False) -> tuple[Any, Any, Any]:
    """Open the database, migrate, start listening for rows; return (db, writer, recovered).

    `recovered` is the RecoveredState of the arena of `mode` and `source` (empty when fresh).
    `gate` (engine.halt.TradingGate) is what the writer halts. Raise RecoveryRefused when the
    stored accounts contradict their rows (unless `accept_reconcile`), SpillReplayFailed when
    the spill file cannot be replayed; the database is closed then.
    """
    from engine.store.database import Database

    db = await Database.open(settings.database, secrets)
    try:
        return await _open_store(db, settings, bus, clock, fresh=fresh, mode=mode, source=source,
                                 gate=gate, accept_reconcile=accept_reconcile)
    except BaseException:
        await db.close()
        raise


async def _open_store(db: Any, settings: Settings, bus: Bus, clock: Clock, *, fresh: bool,
                      mode: str, source: str | None, gate: TradingGate | None,
                      accept_reconcile: bool) -> tuple[Any, Any, Any]:
    from engine.store.database import migrate, writer_session
    from engine.store.recovery import RecoveredState, load_state
    from engine.store.writer import Writer

    applied = await migrate(db.dsn)
    if applied:
        log.info("store.migrated", versions=applied)
    # The writer subscribes at construction, before any producer exists: nothing is lost.
    # A backtest's writer runs on the wall clock, beside the replay (engine.store.writer); a
    # replay's and a backtest's commit asynchronously (their recording or history is the source).
    backtest = mode == "backtest"
    writer = Writer(bus, db.dsn, settings.database, LiveClock() if backtest else clock,
                    asynchronous_commit=mode in ("replay", "backtest"), gate=gate)
    if fresh:
        log.info("arena.fresh", mode=mode, source=source,
                 detail="starting a new arena; history is kept")
        state = RecoveredState(mode=mode, source=source)
    else:
        # Rows spilled during an outage before a crash are replayed first, or the accounts
        # would resume from before them.
        s = settings.database
        state = await load_state(db.dsn, spill_path=s.spill_path, mode=mode,
                                 source=source, returns_kept=settings.leaderboard.returns_kept,
                                 accept_reconcile=accept_reconcile,
                                 spill_limit_s=s.spill_replay_seconds,
                                 connect_timeout_s=s.connect_timeout_seconds,
                                 session=writer_session(s))
    await seed_from(db.dsn)  # after the spill replay: its rows are persisted ids too
    return db, writer, state


async def seed_from(dsn: str) -> None:
    """New ids sort after every persisted one, even if the wall clock went back since."""
    import asyncpg

    from engine.events import seed_ids
    from engine.store.rows import TABLES

    # No max(uuid) in Postgres: each table's newest id through its primary-key index.
    newest = " UNION ALL ".join(f"(SELECT id FROM {t} ORDER BY id DESC LIMIT 1)" for t in TABLES)
    conn = await asyncpg.connect(dsn)
    try:
        seed_ids(await conn.fetchval(f"SELECT id FROM ({newest}) AS n ORDER BY id DESC LIMIT 1"))
    finally:
        await conn.close()


def build_llm_session(settings: Settings, options: Options, clock: Clock,
                      recorder: FrameRecorder | None, dsn: str | None,
                      timing: SessionTiming | None = None) -> tuple[LLMSession | None, CycleIds]:
    """Return the LLM session (None when nothing is recorded, replayed or cached) and the cycle
    ids: a replay's LLM answers and cycle ids come from its file, `--record` writes both."""
    from engine.market.recording import CycleIds, read_timing
    from engine.traders.cache import LLMCache
    from engine.traders.session import LLMSession, Tape

    replay = options.replay
    if replay and timing is None:
        timing = read_timing(replay)
    records = timing.llm if replay and timing else []
    cycles = [(t, c) for t, c, _ in timing.cycles] if replay and timing else None
    use_cache = settings.llm_cache.replay if replay else settings.llm_cache.live
    cache = LLMCache(dsn) if dsn and use_cache else None
    session = None
    if replay or recorder is not None or cache is not None:
        session = LLMSession(clock, tape=Tape(records) if replay else None, recorder=recorder,
                             cache=cache, prices=settings.llm.prices,
                             keep_unrecorded=options.in_backtest)
        if dsn and settings.rate_limits:  # one budget per provider, shared through Postgres
            from engine.traders.rate_budget import RateBudget

            session.budget = RateBudget(dsn, settings.rate_limits, LiveClock())
        if replay:
            log.info("llm.session_loaded", path=replay, llm_records=len(records),
                     cycles=len(cycles or ()), cache=cache is not None,
                     live_llm=options.live_llm)
    return session, CycleIds(recorded=cycles, deterministic=bool(replay), recorder=recorder)


def build_components(settings: Settings, secrets: Secrets, options: Options, bus: Bus,
                     clock: Clock,
                     recovered: dict[str, Any], *, dry_run: bool,
                     dsn: str | None = None, on_fatal: Any = None,
                     gate: TradingGate | None = None) -> Components:
    """Build the feed, the broker with its accounts, the traders and the cycle."""
    from engine.market.book import PriceBook
    from engine.market.candles import CandleStore
    from engine.market.feed import Feed
    from engine.market.snapshot import MarketSnapshotStep
    from engine.paper.board_worker import BoardWorker
    from engine.paper.broker import PaperBroker
    from engine.paper.steps import ExecuteStep, PnLStep, RiskStep
    from engine.store.writer import PersistStep
    from engine.traders.decide import DecideStep, DecisionStep
    from strategies.registry import build_strategies

    s = settings
    book = PriceBook()
    candles = CandleStore(s.feed)
    feed = Feed(s.feed, bus, clock, book, candles, record_path=options.record)
    broker = PaperBroker(s.broker, s.risk, bus, clock, book,
                         snapshot_interval=s.engine.snapshot_interval_seconds,
                         symbols=s.feed.symbols,
                         max_price_age=s.feed.max_price_age_seconds,
                         board=s.leaderboard, funding_history=_funding_history(s, options, clock),
                         gate=gate,
                         # the bootstrap of the engine's per-cycle leaderboard in a process of its
                         # own; a backtest's, rare and one of many in a sweep, in a thread
                         board_worker=BoardWorker(processes=not options.in_backtest))
    # the null: the trader of strategy `random` (the first by name if several), as in the report
    broker.board.null_trader = min(
        (t.name for t in s.traders if t.strategy == "random" and t.enabled), default=None)
    from engine.market.pacing import Pacer
    from engine.market.recording import read_timing

    timing = read_timing(options.replay) if options.replay else None
    llm_session, cycle_ids = build_llm_session(s, options, clock, feed.recorder, dsn, timing)
    pacer = Pacer(clock, recorder=feed.recorder, recorded=timing.pace if timing else None)
    strategies = build_strategies(
        s, secrets, clock, record_llm_dir=options.record_llm, session=llm_session,
        live_calls=options.calls_apis)
    for trader in s.traders:
        if trader.name not in strategies:
            continue
        if trader.name in recovered:
            broker.restore(trader.name, recovered[trader.name])
            log.info("trader.restored", trader=trader.name)
        else:
            broker.open_account(trader.name, trader.starting_capital)
    decisions = DecisionStep(strategies, s.llm, clock, bus)
    in_backtest = options.in_backtest  # (its funding rate: the last settled one)
    cycle = TradingCycle(
        [
            MarketSnapshotStep(book, candles, s.feed, clock),
            DecideStep(decisions, broker, s.risk, recent_fills=s.llm.recent_fills,
                       funding_settled=in_backtest, blind=build_blind(s, options, on_fatal)),
            RiskStep(broker, bus),
            ExecuteStep(broker),
            PnLStep(broker, console=options.console, board_every=s.backtest.board_every_cycles
                    if in_backtest else 1, board_in_background=in_backtest),
            PersistStep(bus),
        ],
        clock,
        bus,
        dry_run=dry_run,
        cycle_ids=cycle_ids,
        pace=pacer,
    )
    starts = tuple((t, trigger) for t, _, trigger in timing.cycles) if timing else ()
    return Components(book, candles, feed, broker, strategies, decisions, cycle, llm_session,
                      starts)


def build_blind(settings: Settings, options: Options, on_fatal: Any) -> Any:
    """Return the run's Blind when a trader is blind (its seed: the backtest's source, else the
    settings' digest, so a replay or a re-run shows the same blind prompts), else None."""
    if not any(t.blind and t.strategy == "llm" for t in settings.traders):
        return None
    import hashlib

    from engine.traders.blind import Blind

    source = options.backtest_source or settings.digest()
    seed = int(hashlib.sha256(f"blind:{source}".encode()).hexdigest()[:15], 16)
    return Blind(settings.feed.symbols, seed, on_leak=on_fatal)


class AlertsHost(Protocol):
    """What the alerts are built from: the engine's settings, options, bus, clock and probes."""

    settings: Settings
    options: Options
    bus: Bus
    clock: Clock
    feed: Any  # engine.market.feed.Feed: its status()
    writer: Any  # engine.store.writer.Writer or None: its status()


def build_alerts(engine: AlertsHost) -> Alerts | None:
    """Build the alerts component, or None when turned off (--no-alerts) or without webhooks."""
    s = engine.settings.alerts
    if engine.options.no_alerts or not s.enabled or not s.webhooks:
        return None
    import os

    from engine.web.alerts import Alerts

    def probe() -> dict[str, Any]:
        writer = engine.writer.status() if engine.writer is not None else None
        return {"price_age": engine.feed.status()["price_age"], "writer": writer}

    return Alerts(s, engine.bus, engine.clock, os.environ, probe=probe)


async def load_exchange_filters(settings: Settings, clock: Clock, broker: PaperBroker) -> None:
    """Take step/tick size and min notional from Binance's exchangeInfo; settings on failure."""
    from engine.market.binance import BinanceRest, RestError

    rest = BinanceRest(settings.feed, clock)
    try:
        filters = await rest.exchange_info(settings.feed.symbols)
    except (RestError, ValueError, KeyError, TypeError) as exc:  # unreachable, refused, malformed
        log.warning("broker.exchange_info_failed", error=f"{type(exc).__name__}: {exc}",
                    detail="using the filters from settings.toml")
        return
    finally:
        await rest.close()
    broker.set_filters(filters)
    log.info("broker.exchange_info_loaded", symbols=sorted(filters))


def _funding_history(s: Settings, options: Options, clock: Clock) -> FundingHistory | None:
    """Return where the broker reads funding missed while the engine was down (live futures)."""
    if s.feed.market != "futures" or options.replay or options.in_backtest:
        return None
    from engine.paper.funding import binance_funding_history

    return binance_funding_history(s.feed, clock)


def providers_to_warm(settings: Settings, secrets: Secrets,
                      options: Options) -> dict[str, tuple[Any, str]]:
    """Return the providers whose traders will call an API (name → (settings, a model)): what
    `engine.traders.warmup.prewarm` warms while the database starts."""
    from strategies.registry import provider_key

    if not options.calls_apis:
        return {}  # a replay without --live-llm hands no key to a client: nothing to warm
    out: dict[str, tuple[Any, str]] = {}
    for t in settings.traders:
        if t.enabled and t.strategy == "llm" and t.provider is not None and t.model is not None \
                and t.provider not in out and provider_key(settings, secrets, t.provider):
            out[t.provider] = (settings.llm.providers.get(t.provider), t.model)
    return out


def preload(modules: tuple[str, ...] = BUILD_MODULES) -> None:
    """Import `modules` (in a worker thread, while the database starts)."""
    for name in modules:
        importlib.import_module(name)
