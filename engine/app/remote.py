"""`python run.py trigger | pause | resume | status`: command the running engine's control API.

The engine writes its pid (`arena.pid`) and its control API's URL (`control.url`, the bound host
and port) in its data directory, the directory of `database.spill_path` (./data by default), and
removes them when it stops. These commands read the URL from there (else `[control]` host and
port), send the request with `Authorization: Bearer $ARENA_CONTROL_TOKEN` when that is set, and
print the answer in a few lines. Exit codes: 0 done, 1 refused by the engine (a cycle already
running), 2 no engine answers or the token is missing or wrong.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.app.args import Parser
from engine.app.pidfile import URL_FILE
from engine.settings import Settings, SettingsError, load_settings

COMMANDS = {"trigger": "POST /trigger: run one trading cycle now, wait for its summary",
            "pause": "POST /pause: stop firing scheduled jobs (a running cycle finishes)",
            "resume": "POST /resume: fire scheduled jobs again",
            "status": "GET /status: the engine's state, feed, jobs and writer"}
TIMEOUT_S = 5.0
TRIGGER_TIMEOUT_S = 300.0  # a manual cycle answers when it has finished


def data_dir(settings: Settings) -> Path:
    """Return the engine's data directory: where its spill file, pid and control URL live."""
    return Path(settings.database.spill_path).expanduser().resolve().parent


def engine_url(settings: Settings) -> str:
    """Return the running engine's control URL (its `control.url` file, else the settings')."""
    from engine.web.control import page_url

    try:
        written = (data_dir(settings) / URL_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        written = ""
    return written or page_url(settings.control.host, settings.control.port)


def parser(command: str) -> Parser:
    p = Parser(prog=f"run.py {command}", description=COMMANDS[command])
    p.add_argument("--config", metavar="PATH", help="settings file (default: ./settings.toml)")
    p.add_argument("--url", help="the engine's control URL (default: from its data directory, "
                   "else [control] host and port)")
    return p


def request(url: str, command: str, token: str | None) -> tuple[int, dict[str, Any]]:
    """Send `command` to the control API at `url`; return (HTTP status, JSON body)."""
    post = command != "status"
    req = urllib.request.Request(url.rstrip("/") + "/" + command,
                                 data=b"{}" if post else None,
                                 method="POST" if post else "GET")
    if post:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    timeout = TRIGGER_TIMEOUT_S if command == "trigger" else TIMEOUT_S
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        return int(exc.code), body if isinstance(body, dict) else {}


def describe(command: str, body: dict[str, Any]) -> list[str]:
    """Return the lines that say what the engine answered."""
    if command == "trigger":
        s = body.get("summary") or {}
        return [f"trigger: cycle {s.get('cycle_id', '?')} {s.get('status', '?')}: "
                f"{s.get('valid', '?')} valid decision(s), {s.get('fills', '?')} fill(s), "
                f"{s.get('duration_s', '?')} s"]
    if command in ("pause", "resume"):
        state = "paused" if body.get("paused") else "running"
        return [f"{command}: scheduled jobs {state}"
                + ("" if body.get("changed") else " (already)")]
    feed = body.get("feed") or {}
    jobs = body.get("jobs") or []
    arena = body.get("arena") or {}
    lines = [f"status: {body.get('state')}{' (paused)' if body.get('paused') else ''}, "
             f"version {body.get('version')}, arena {arena.get('mode')}"
             f"{'' if not arena.get('source') else ' ' + str(arena['source'])[:16]}"
             f"{', dry run' if body.get('dry_run') else ''}",
             f"feed: {feed.get('state')}, stale: {', '.join(body.get('stale') or []) or 'none'}"]
    for job in jobs if isinstance(jobs, list) else ():
        if isinstance(job, dict):
            lines.append(f"job {job.get('name')}: {'running, ' if job.get('running') else ''}"
                         f"next {job.get('next_run') or '-'}, runs {job.get('runs', '-')}, "
                         f"errors {job.get('errors', '-')}, last {job.get('last_status') or '-'}")
    return lines


def main(command: str, argv: Sequence[str] | None = None) -> int:
    """Run one control command from the command line; return the exit code."""
    try:
        args = parser(command).parse_args(list(argv or ()))
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"settings error: {exc}", file=sys.stderr)
        return 2
    url = args.url or engine_url(settings)
    token = os.environ.get("ARENA_CONTROL_TOKEN") or None
    try:
        status, body = request(url, command, token)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"{command}: no engine answers at {url} ({reason}); start one with "
              "`python run.py`, or give --url", file=sys.stderr)
        return 2
    if status == 401:
        print(f"{command}: the engine at {url} wants its token: set ARENA_CONTROL_TOKEN "
              f"({body.get('message', 'unauthorized')})", file=sys.stderr)
        return 2
    if status >= 400:
        print(f"{command}: refused by the engine at {url} (HTTP {status}: "
              f"{body.get('message') or body.get('error') or 'no reason given'})",
              file=sys.stderr)
        return 1
    for line in describe(command, body):
        print(line, flush=True)
    return 0
