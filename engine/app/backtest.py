"""`python run.py backtest`: the engine on a window of Binance history, on simulated time.

The window's history is fetched from Binance USD-M REST (or the disk cache) by
`engine.market.history`, turned into a recording, and the engine replays it as usual: the same
scheduler, cycle, risk, broker and writer, in a fresh arena of mode `backtest` whose source is a
hash of the window, the symbols, the settings and the traders' prompt templates. LLM traders
call the real APIs only with `--live-llm` (after a cost estimate and a question, `--yes` skips
it); otherwise they answer from the LLM answer cache or hold with `not_recorded`. Bad input (a
window in the future, `--to` not after `--from`, a window over `backtest.max_days`, an unknown
symbol or trader, a window an LLM trader's model may remember without `--allow-contamination`:
`engine.app.exposure`) prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from engine.app.args import Parser
from engine.app.costs import confirm, estimate
from engine.settings import DEFAULT_PATH, Secrets, Settings, SettingsError, load_settings


class BadInput(Exception):
    """A backtest request that cannot run; the message is the one line shown."""


def _when(text: str) -> float:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time like 2026-10-01T00:00: {text!r}"
                                         ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def parser() -> Parser:
    p = Parser(prog="run.py backtest",
                                description="Run the arena on a window of Binance history.")
    p.add_argument("--from", dest="start", type=_when, required=True, metavar="TIME",
                   help="window start, UTC (e.g. 2026-10-01T00:00)")
    p.add_argument("--to", dest="end", type=_when, required=True, metavar="TIME",
                   help="window end, UTC, exclusive")
    p.add_argument("--symbols", type=_names, help="comma-separated (default: feed.symbols)")
    p.add_argument("--traders", type=_names, help="comma-separated trader names (default: all)")
    p.add_argument("--speed", default="max", metavar="X|max",
                   help="replay speed: a multiple of real time, or max (default)")
    p.add_argument("--live-llm", action="store_true",
                   help="let LLM traders call the real APIs (needs their keys; costs money)")
    p.add_argument("--yes", action="store_true", help="do not ask before spending")
    p.add_argument("--resume", action="store_true",
                   help="continue the arena of this window after its last persisted instant "
                   "(default: a fresh arena)")
    p.add_argument("--blind", action="store_true",
                   help="LLM traders see no dates, clock times, real symbols or price levels")
    p.add_argument("--blind-and-plain", action="store_true",
                   help="run each LLM trader twice on the same window, plain and blind (X and "
                        "X-blind); the report shows the difference")
    p.add_argument("--windows", type=int, default=1, metavar="N",
                   help="walk-forward: split the period into N consecutive windows, each a "
                        "fresh arena; per window and pooled results, and with 3+ variants and "
                        "an even N >= 4 the probability of backtest overfitting (PBO)")
    p.add_argument("--allow-contamination", action="store_true",
                   help="run LLM traders on a window their model may remember (before or on its "
                        "training cutoff, or with the cutoff unknown); the report labels them")
    p.add_argument("--config", metavar="PATH", help="settings file (default: ./settings.toml)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["json", "console"])
    return p


def plan(settings: Settings, args: argparse.Namespace, now: float) -> Settings:
    """Check the request against `now` and settings; return the backtest's settings."""
    start, end = args.start, args.end
    if end <= start:
        raise BadInput("--to must be after --from")
    if end > now:
        raise BadInput(f"the window ends in the future ({_iso(end)} > now {_iso(now)})")
    if not 1 <= getattr(args, "windows", 1) <= 52:
        raise BadInput("--windows must be from 1 to 52")
    days = (end - start) / 86_400
    if days > settings.backtest.max_days:
        raise BadInput(f"the window is {days:g} days; backtest.max_days is "
                       f"{settings.backtest.max_days:g}")
    symbols = args.symbols or settings.feed.symbols
    traders = settings.traders
    if args.traders:
        unknown = sorted(set(args.traders) - {t.name for t in traders})
        if unknown:
            raise BadInput(f"unknown trader {', '.join(unknown)}; settings have "
                           f"{', '.join(t.name for t in traders)}")
        traders = tuple(t for t in traders if t.name in args.traders)
    try:
        feed = settings.feed.model_validate({**settings.feed.model_dump(), "market": "futures",
                                             "symbols": symbols,
                                             "max_candles": settings.backtest.max_candles})
    except ValueError as exc:
        raise BadInput(f"bad --symbols: {exc.errors()[0]['msg']}") from None  # type: ignore[attr-defined]
    out = settings.model_copy(update={"feed": feed, "traders": traders})
    if getattr(args, "blind", False) or getattr(args, "blind_and_plain", False):
        from engine.app.exposure import with_blind

        out = with_blind(out, both=args.blind_and_plain)
    if not getattr(args, "allow_contamination", False):
        from engine.app.exposure import refusal

        line = refusal(out, start, end)  # before anything is fetched
        if line is not None:
            raise BadInput(line)
    return out


def source_hash(settings: Settings, start: float, end: float) -> str:
    """Return the run's source: a hash of the window, symbols, settings and prompt templates."""
    from engine.market.history import STREAM_VERSION
    from engine.traders.prompt import load_template

    h = hashlib.sha256(f"{STREAM_VERSION}:{start}:{end}:{','.join(settings.feed.symbols)}:"
                       .encode())
    h.update(settings.digest().encode())
    for t in settings.traders:
        if t.strategy == "llm":
            h.update(load_template(t.prompt_template).encode())
    return h.hexdigest()[:16]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


async def prepare(settings: Settings, start: float, end: float, now: float) -> tuple[Path, Any]:
    """Fetch (or read from the cache) the history and write the window's recording once."""
    from engine.clock import LiveClock
    from engine.market.binance import BinanceRest
    from engine.market.history import History, stream, write_recording

    rest = BinanceRest(settings.feed, LiveClock())
    history = History(settings, rest, now=now)
    try:
        if not _cached(history, settings, start):
            await _check_reachable(settings)
        await _check_symbols(history, settings, start, end)
        data = await history.load(settings.feed.symbols, start, end)
    finally:
        await rest.close()
    missing = [s for s, h in data.items() if not any(start <= c.open_time for c in h.candles)]
    if missing:
        raise BadInput(f"no history for {', '.join(missing)} in the window")
    name = f"{source_hash(settings, start, end)}.jsonl.gz"
    path = Path(settings.backtest.cache_dir) / "streams" / name
    if not path.exists():
        write_recording(path, stream(data, settings, start, end))
    return path, history


def _cached(history: Any, settings: Settings, start: float) -> bool:
    from engine.market.history import DAY

    return all((history.cache / "futures" / s / f"{int(start // DAY) * DAY}.json.gz").exists()
               for s in settings.feed.symbols)


async def _check_reachable(settings: Settings) -> None:
    """Refuse, in one line, a history server that does not answer (instead of retrying)."""
    from engine.market.reach import offline_command, unreachable

    url = settings.feed.futures_rest_url
    why = await unreachable(url)
    if why is not None:
        raise BadInput(f"cannot fetch history from {url}: {why}; offline, try "
                       f"`{offline_command()}` (a synthetic market)")


async def _check_symbols(history: Any, settings: Settings, start: float, end: float) -> None:
    """Refuse a symbol Binance does not list (asked only when its days are not cached)."""
    if _cached(history, settings, start):
        return
    info = await history.rest.get("exchangeInfo", {}, 1)
    listed = {e.get("symbol") for e in info.get("symbols", [])}
    unknown = [s for s in settings.feed.symbols if s not in listed]
    if unknown:
        raise BadInput(f"unknown symbol {', '.join(unknown)} (not listed by "
                       f"{settings.feed.futures_rest_url})")


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None,
         now: float | None = None) -> int:
    """Run a backtest from the command line; return the exit code."""
    from engine import logging as arena_logging
    from engine import redact
    from engine.app.preflight import check_models
    from engine.clock import LiveClock

    try:
        args = parser().parse_args(list(argv or ()))
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        speed = None if args.speed == "max" else float(args.speed)
        if speed is not None and speed <= 0:
            raise ValueError
    except ValueError:
        print(f"backtest error: --speed must be > 0 or 'max', not {args.speed!r}", file=sys.stderr)
        return 2
    now = LiveClock().time() if now is None else now
    try:
        settings = plan(load_settings(args.config), args, now)
        check_models(settings, args.config or DEFAULT_PATH)
    except SettingsError as exc:
        print(f"settings error: {exc}", file=sys.stderr)
        return 2
    except BadInput as exc:
        print(f"backtest error: {exc}", file=sys.stderr)
        return 2
    secrets = Secrets.from_env()
    arena_logging.configure(args.log_level or settings.engine.log_level,
                            args.log_format or settings.engine.log_format)
    redact.register_configured(secrets.values(), settings, os.environ)  # + *_env settings

    run = Run(settings, secrets, args.start, args.end, now, speed=speed,
              live_llm=args.live_llm, assume_yes=args.yes, resume=args.resume,
              stdin=stdin or sys.stdin)
    return run_sync(execute(run, args))


@dataclass(frozen=True, slots=True)
class Run:
    """One backtest to execute: its settings, window and options."""

    settings: Settings
    secrets: Secrets
    start: float
    end: float
    now: float
    speed: float | None = None
    live_llm: bool = False
    assume_yes: bool = False
    resume: bool = False
    stdin: TextIO | None = None
    page_url: str | None = None  # printed at the end (the demo: where the live page is)


def run_sync(main: Coroutine[Any, Any, int]) -> int:
    """Run a backtest coroutine on uvloop; map the errors a user can fix to exit code 2."""
    import uvloop

    from engine.app.preflight import UserError

    try:
        return uvloop.run(main)
    except SettingsError as exc:
        print(f"settings error: {exc}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"backtest error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def execute(run: Run, args: argparse.Namespace | None = None) -> int:
    """Fetch the window, replay it in the backtest's arena (or its walk-forward windows),
    print the verdict; return the exit code. `args`: the command line's (the demo: none)."""
    from engine.market.binance import RestError
    from engine.market.history import HistoryError

    settings = run.settings
    args = args or argparse.Namespace(live_llm=run.live_llm, resume=run.resume, windows=1)
    try:
        path, history = await prepare(settings, run.start, run.end, run.now)
    except (BadInput, RestError, HistoryError) as exc:
        print(f"backtest error: {exc}", file=sys.stderr)
        return 2
    print(f"backtest: {_iso(run.start)} to {_iso(run.end)} UTC, "
          f"{', '.join(settings.feed.symbols)}; history: {history.fetched_days} day(s) "
          f"fetched, {history.cached_days} from the cache; stream {path}", flush=True)
    rows = estimate(settings, run.start, run.end, live=run.live_llm, secrets=run.secrets)
    if not confirm(rows, live=run.live_llm, assume_yes=run.assume_yes,
                   stdin=run.stdin or sys.stdin):
        print("backtest: cancelled, nothing was spent", flush=True)
        return 1
    if getattr(args, "windows", 1) > 1:
        from engine.app.walkforward import run_windows

        return await run_windows(settings, run.secrets, args, run.now, run.speed, run_window)
    code, engine = await run_window(settings, run.secrets, args, run.start, run.end, run.now,
                                    run.speed, path=path)
    from engine import logging as arena_logging
    from engine.report.verdict import show

    show(getattr(engine, "report", None), settings.leaderboard.min_returns,
         page_url=run.page_url, paths=not arena_logging.console_mode())  # console: printed
    return code


async def run_window(settings: Settings, secrets: Secrets, args: argparse.Namespace,
                     start: float, end: float, now: float, speed: float | None, *,
                     path: Path | None = None) -> tuple[int, Any]:
    """Run the arena on [start, end) (a fresh arena of its own); return (exit code, engine)."""
    from engine import logging as arena_logging
    from engine.app.engine import Engine, Options
    from engine.app.exposure import labels, summary_line

    if path is None:
        path, _ = await prepare(settings, start, end, now)
    marks = labels(settings, start, end)
    resume = bool(getattr(args, "resume", False))  # --resume: this window's arena continues
    options = Options(replay=str(path), speed=speed, fresh=not resume, resume=resume,
                      live_llm=args.live_llm,
                      console=arena_logging.console_mode(),
                      backtest_source=source_hash(settings, start, end), labels=marks or None)
    engine = Engine(settings, secrets, options)
    code = await engine.run()
    # The CIs over the whole run, shown for variants only (the report has its own).
    if _variants(settings) and getattr(engine, "broker", None) is not None:
        await engine.broker.refresh_board_stats()
    _llm_summary(engine)
    if marks:
        print(f"backtest: memory exposure: {summary_line(marks)}", flush=True)
    _blind_vs_plain(engine, marks)
    _warn_variants(settings, getattr(getattr(engine, "broker", None), "board_stats", None))
    return code, engine


def _llm_summary(engine: Any) -> None:
    """Say what the LLM calls cost and what the answer cache saved."""
    session = getattr(engine, "llm_session", None)
    if session is None:
        return
    s = session.summary()
    print(f"backtest: LLM calls: {s['live']} live (spent {s['spent_usd']:.4f} USD), "
          f"{s['cache']} from the cache (saved {s['saved_usd']:.4f} USD), "
          f"{s['not_recorded']} not recorded (held)", flush=True)


def _blind_vs_plain(engine: Any, marks: dict[str, Any]) -> None:
    """Say, for each blind twin, its return against its plain twin's (what memory may add)."""
    broker = getattr(engine, "broker", None)
    if broker is None:
        return
    for name, m in marks.items():
        plain = m.get("plain")
        if plain is None or plain not in broker.accounts or name not in broker.accounts:
            continue
        ret = {t: broker.account_view(t)["return_pct"] for t in (plain, name)}
        print(f"backtest: blind vs plain: {plain} {ret[plain]:+.3f} %, {name} {ret[name]:+.3f} "
              f"%: plain - blind = {ret[plain] - ret[name]:+.3f} pp (what memory may add)",
              flush=True)


def _variants(settings: Settings) -> dict[tuple[str, str], list[str]]:
    """Return the traders sharing a model (or rule), by (provider, model), when more than one."""
    groups: dict[tuple[str, str], list[str]] = {}
    for t in settings.traders:
        groups.setdefault((t.provider or "rule", t.model or t.strategy), []).append(t.name)
    return {k: v for k, v in groups.items() if len(v) > 1}


def _warn_variants(settings: Settings, board: Any = None) -> None:
    """Show the variants side by side (CIs, P(A beats B)) and the correction applied."""
    variants = _variants(settings)
    per = dict(getattr(board, "per_trader", None) or {})
    pairs = {(p["a"], p["b"]): p for p in getattr(board, "pairwise", None) or ()}
    for (provider, model), names in sorted(variants.items()):
        print(f"backtest: variants of {provider}/{model} side by side: {', '.join(names)}",
              flush=True)
        for name in names:
            stats = per.get(name) or {}
            dsr = stats.get("deflated_sharpe")
            print(f"  {name}: return 95% CI {stats.get('return_ci') or '-'}, Sharpe 95% CI "
                  f"{stats.get('sharpe_ci') or '-'}, deflated Sharpe "
                  f"{'-' if dsr is None else dsr}", flush=True)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                p = pairs.get((a, b)) or pairs.get((b, a))
                prob = None if p is None else p["p_a_beats_b"]
                if p is not None and prob is not None and p["a"] != a:
                    prob = round(1 - prob, 4)
                print(f"  P({a} beats {b}) = {'-' if prob is None else prob}", flush=True)
    n = len(settings.traders)
    if n > 2:
        print(f"backtest: warning: {n} traders compared on one market pass; the best of many "
              "looks good by luck alone. The report's deflated Sharpe (Bailey & López de Prado) "
              f"corrects each Sharpe for {n} trials; read P(A beats B) with that in mind.",
              flush=True)
