"""Command line: parse flags, load settings (exit 2 when bad), configure logs, run the engine."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import structlog

from engine import logging as arena_logging
from engine import redact
from engine.app.args import Parser
from engine.settings import DEFAULT_PATH, Secrets, SettingsError, load_settings


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--speed must be a number > 0 or 'max', not {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--speed must be > 0 or 'max', not {text!r}")
    return value


def _tags(text: str) -> frozenset[str]:
    return frozenset(t.strip() for t in text.split(",") if t.strip())


def parser() -> Parser:
    p = Parser(
        prog="run.py",
        description="arena: LLMs trading side by side. Subcommands: "
        + ", ".join(f"run.py {name} --help" for name in SUBCOMMANDS),
    )
    p.add_argument("--config", metavar="PATH", help="settings file (default: ./settings.toml)")
    p.add_argument(
        "--once",
        action="store_true",
        help="run one trading cycle when ready; exit 0 if it succeeded, 1 if not",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="make and log decisions, but execute and persist nothing",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start a new arena instead of resuming the persisted one (live runs)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --replay: continue the arena of this recording after its last persisted "
        "instant (default: a replay starts a fresh arena)",
    )
    p.add_argument(
        "--accept-reconcile",
        action="store_true",
        help="resume even where an account contradicts its stored fills: rebuild it from them",
    )
    p.add_argument(
        "--include-tags",
        type=_tags,
        default=frozenset(),
        metavar="a,b",
        help="run only jobs with one of these tags",
    )
    p.add_argument(
        "--exclude-tags",
        type=_tags,
        default=frozenset(),
        metavar="c",
        help="do not run jobs with any of these tags",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["json", "console"])
    p.add_argument("--record", metavar="FILE",
                   help="record the session: every raw frame, LLM call and cycle id (gzip if .gz)")
    p.add_argument("--replay", metavar="FILE",
                   help="run the engine on a recording: its market, and its LLM answers")
    p.add_argument(
        "--speed",
        type=_speed,
        default=None,
        metavar="X|max",
        help="replay speed: a multiple of real time, or max (default)",
    )
    p.add_argument("--no-alerts", action="store_true", help="send no alert to any webhook")
    p.add_argument(
        "--record-llm",
        metavar="DIR",
        help="save every real LLM request/response as a test fixture in DIR",
    )
    p.add_argument(
        "--live-llm",
        action="store_true",
        help="in a replay, ask the real APIs (keys from the environment) for prompts the "
        "recording and the answer cache do not hold (default: hold with not_recorded)",
    )
    return p


def _report(argv: list[str]) -> int:
    from engine.app.commands import report_main

    return report_main(argv)


def _db(argv: list[str]) -> int:
    from engine.app.commands import db_main

    return db_main(argv)


def _backtest(argv: list[str]) -> int:
    from engine.app.backtest import main as backtest_main

    return backtest_main(argv)


def _sweep(argv: list[str]) -> int:
    from engine.app.sweep import main as sweep_main

    return sweep_main(argv)


def _demo(argv: list[str]) -> int:
    from engine.app.demo import main as demo_main

    return demo_main(argv)


def _remote(command: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        from engine.app.remote import main as remote_main

        return remote_main(command, argv)

    return run


# `python run.py <name> ...` runs a subcommand; anything else runs the engine.
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "demo": _demo,
    "trigger": _remote("trigger"),
    "pause": _remote("pause"),
    "resume": _remote("resume"),
    "status": _remote("status"),
    "backtest": _backtest,
    "sweep": _sweep,
    "report": _report,
    "db": _db,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand, or the engine, from the command line; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    args = parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"settings error: {exc}", file=sys.stderr)
        return 2
    secrets = Secrets.from_env()
    fmt = args.log_format or settings.engine.log_format
    redact.register_configured(secrets.values(), settings, os.environ)  # + *_env settings
    from engine.app.preflight import UserError, check_local, check_remote

    try:
        # What a user can get wrong fails here, in one line, before anything heavy is imported.
        check_local(settings, secrets, args, args.config or DEFAULT_PATH)
    except (SettingsError, UserError) as exc:
        kind = "settings error" if isinstance(exc, SettingsError) else "error"
        print(arena_logging.redact(f"{kind}: {exc}"), file=sys.stderr)
        return 2
    arena_logging.configure(args.log_level or settings.engine.log_level, fmt)
    from engine.web.control import is_loopback

    if (
        settings.control.enabled
        and not is_loopback(settings.control.host)
        and not secrets.control_token
    ):
        print(
            f"settings error: control.host {settings.control.host!r} is not loopback; "
            "set ARENA_CONTROL_TOKEN or bind to 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    if settings.control.enabled and settings.control.protect_reads and not secrets.control_token:
        print("settings error: control.protect_reads needs ARENA_CONTROL_TOKEN; set it or "
              "set protect_reads = false", file=sys.stderr)
        return 2

    from engine.app.engine import Engine, Options

    options = Options(
        once=args.once,
        dry_run=args.dry_run,
        # A replay starts a fresh arena unless --resume; a live run resumes unless --fresh.
        fresh=args.fresh or (args.replay is not None and not args.resume),
        resume=args.resume,
        include_tags=args.include_tags,
        exclude_tags=args.exclude_tags,
        record=args.record,
        replay=args.replay,
        speed=args.speed,
        record_llm=args.record_llm,
        live_llm=args.live_llm,
        console=arena_logging.console_mode(),
        no_alerts=args.no_alerts,
        accept_reconcile=args.accept_reconcile,
    )

    async def _main() -> int:
        await check_remote(settings, secrets, options)
        return await Engine(settings, secrets, options).run()

    import uvloop

    try:
        return uvloop.run(_main())
    except SettingsError as exc:
        print(arena_logging.redact(f"settings error: {exc}"), file=sys.stderr)
        return 2
    except UserError as exc:
        print(arena_logging.redact(f"error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception:  # the process boundary: any crash is logged and exits 1
        structlog.get_logger("app").exception("engine.crashed")
        return 1
