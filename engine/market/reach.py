"""Is an exchange URL reachable? One TCP connect with a short timeout, and why not in words.

Used at start-up (beside the database's start) and before a backtest fetches history, so a
machine without network hears so in one line within seconds instead of after a minute of
retries. Only the connection is tried: nothing is sent.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_TIMEOUT_S = 3.0


def host_port(url: str) -> tuple[str, int]:
    """Return the host and port a URL connects to (443 for https/wss, 80 for http/ws)."""
    parts = urlsplit(url)
    default = 443 if parts.scheme in ("https", "wss") else 80
    return parts.hostname or "", parts.port or default


async def unreachable(url: str, timeout: float = DEFAULT_TIMEOUT_S) -> str | None:
    """Return why `url`'s host cannot be connected to within `timeout`, or None if it can."""
    host, port = host_port(url)
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except socket.gaierror:
        return f"DNS lookup of {host} failed"
    except ConnectionRefusedError:
        return f"connection to {host}:{port} refused"
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc.strerror or type(exc).__name__})"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:  # the peer may reset a connection that sends nothing; it was reachable
        pass
    return None


def offline_command() -> str:
    """Return the offline demo command exactly as this user can type it (their interpreter)."""
    exe = Path(sys.executable)
    try:
        shown = str(exe.relative_to(Path.cwd()))
    except ValueError:
        shown = str(exe)
    # An interpreter found on PATH under its own name (an activated venv) is typed as its name;
    # compared unresolved, since a venv's python links to the system one.
    found = shutil.which(exe.name)
    if found and os.path.abspath(found) == os.path.abspath(exe):
        shown = exe.name
    typed = sys.argv[0] if sys.argv and sys.argv[0].endswith("run.py") else "run.py"
    return f"{shown} {typed} demo"
