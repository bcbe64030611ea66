"""The engine's pid file and control URL file in its data directory (`run.py status` reads them).

`arena.pid` holds the process id (so `kill -USR1 "$(cat data/arena.pid)"` signals this engine
and no other), `control.url` the control API's URL on the bound host and port. Both are removed
when the engine stops. A pid file of another engine that is still running is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("app")

PID_FILE = "arena.pid"
URL_FILE = "control.url"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def claim(directory: Path) -> bool:
    """Write this process's pid file; return False (and write nothing) when another running
    engine holds it or the directory is not writable."""
    path = directory / PID_FILE
    try:
        other = int(path.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        other = None
    if other is not None and other != os.getpid() and _alive(other):
        log.info("engine.pid_file_held", path=str(path), pid=other,
                 detail="another engine runs with this data directory; run.py status talks "
                 "to it")
        return False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{os.getpid()}\n", encoding="utf-8")
    except OSError as exc:
        log.warning("engine.pid_file_failed", path=str(path), error=str(exc))
        return False
    return True


def write_url(directory: Path, host: str, port: int) -> None:
    """Write the control API's URL (the bound host and port) beside the pid file."""
    from engine.web.control import page_url

    url = page_url(host, port)
    try:
        (directory / URL_FILE).write_text(url + "\n", encoding="utf-8")
    except OSError as exc:
        log.warning("engine.pid_file_failed", path=str(directory / URL_FILE), error=str(exc))


def release(directory: Path) -> bool:
    """Remove the pid and URL files if this process wrote them; return False (none held)."""
    path = directory / PID_FILE
    try:
        mine = int(path.read_text(encoding="utf-8").split()[0]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False
    if mine:
        for name in (PID_FILE, URL_FILE):
            (directory / name).unlink(missing_ok=True)
    return False


class PidFiles:
    """This engine's pid and URL files: claimed at start, the URL once the API listens,
    released at exit."""

    def __init__(self, settings: Any) -> None:
        # The data directory: the spill file's (./data by default).
        self.directory = Path(settings.database.spill_path).expanduser().resolve().parent
        self.held = claim(self.directory)

    async def publish(self, control: Any, host: str) -> None:
        """Once the control API listens, write its URL (the bound host and port)."""
        await control.started.wait()
        if self.held:
            write_url(self.directory, host, control.port)

    def release(self) -> None:
        """Remove the files if this engine wrote them."""
        if self.held:
            self.held = release(self.directory)
