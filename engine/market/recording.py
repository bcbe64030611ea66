"""Recording files: raw frames (and backfilled candles) with their receive times, as JSON lines.

File format: one JSON object per line, `{"t": <receive time, epoch seconds>, "raw": "<frame text
exactly as received>"}`, gzip-compressed when the file name ends in `.gz`. Every frame received
is recorded, bad ones included, so a replay reproduces the drop counts too. Candles fetched over
REST by a backfill are recorded as `{"t": ..., "backfill": {"symbol": "BTCUSDT", "interval":
"1m", "candles": [[open_time_s, open, high, low, close, volume], ...]}}`, so a replay rebuilds
exactly the candle series of the live run without calling REST.

Replay moves the `SimClock` to each frame's receive time before handing the frame to
`Feed.handle_frame`, so timers (the 5-minute cycles) fire at the recorded times. At `speed=None`
it runs as fast as the engine keeps up; at `speed=X` it waits in real time, X times faster than
recorded.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

from engine.market.candles import Candle

log = structlog.get_logger("feed")

FLUSH_EVERY_S = 5.0  # recorded frames reach the disk at least this often


def _open(path: str | Path, mode: str) -> IO[bytes]:
    if str(path).endswith(".gz"):
        return gzip.open(path, mode)  # type: ignore[return-value]
    return open(path, mode)


class FrameRecorder:
    """Appends every raw frame with its receive time to a JSON-lines file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._fh = _open(self.path, "ab")
        self._flushed_at = 0.0
        self.frames = 0

    def write(self, raw: str | bytes, recv_time: float) -> None:
        """Record one frame."""
        if isinstance(raw, bytes | bytearray | memoryview):
            raw = bytes(raw).decode("utf-8", errors="replace")
        self._fh.write(orjson.dumps({"t": recv_time, "raw": raw}))
        self._fh.write(b"\n")
        self.frames += 1
        if recv_time - self._flushed_at >= FLUSH_EVERY_S:
            self._fh.flush()
            self._flushed_at = recv_time

    def write_backfill(self, symbol: str, interval: str, candles: list[Candle],
                       recv_time: float) -> None:
        """Record candles a backfill fetched."""
        record = {"symbol": symbol, "interval": interval, "candles": [list(c) for c in candles]}
        self._fh.write(orjson.dumps({"t": recv_time, "backfill": record}))
        self._fh.write(b"\n")

    def close(self) -> None:
        """Flush and close the file."""
        if not self._fh.closed:
            self._fh.close()


Record = str | dict[str, Any]  # a raw frame, or a backfill record


def read_frames(path: str | Path) -> Iterator[tuple[float, Record]]:
    """Yield (receive time, raw frame or backfill record); skip (and log) unreadable lines."""
    bad = 0
    with _open(path, "rb") as fh:
        for line in fh:
            try:
                rec = orjson.loads(line)
                t = float(rec["t"])
                item = rec["raw"] if "raw" in rec else rec["backfill"]
                if not isinstance(item, str | dict):
                    raise TypeError("neither a frame nor a backfill")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                bad += 1
                continue
            yield t, item
    if bad:
        log.warning("feed.replay_bad_lines", path=str(path), lines=bad)


def first_frame_time(path: str | Path) -> float | None:
    """Return the receive time of the first frame in a recorded file (to start a SimClock there)."""
    for t, _ in read_frames(path):
        return t
    return None
