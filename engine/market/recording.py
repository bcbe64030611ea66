"""Recording files: raw frames (and backfilled candles) with their receive times, as JSON lines.

File format: one JSON object per line, `{"t": <receive time, epoch seconds>, "raw": "<frame text
exactly as received>"}`, gzip-compressed when the file name ends in `.gz`. Every frame received
is recorded, bad ones included, so a replay reproduces the drop counts too. Candles fetched over
REST by a backfill are recorded as `{"t": ..., "backfill": {"symbol": "BTCUSDT", "interval":
"1m", "candles": [[open_time_s, open, high, low, close, volume], ...]}}`, so a replay rebuilds
exactly the candle series of the live run without calling REST.

A backtest's stream (`engine.market.history`) puts everything published at one time on one
`{"t": ..., "batch": [...]}` line, in order: a frame text, a backfill record, or a `{"path":
"<symbol>", "frames": [...]}` item, frames the replay hands to the feed only while the engine
wants them (the book's path inside a minute, while a stop or take could trigger on it).

A whole-session recording (`--record` with LLM traders) also holds one `{"t": ..., "llm": {...}}`
line per LLM call (trader, provider, model, params, prompt_hash, request, response, latency; see
`engine.traders.session`), one `{"t": <start>, "cycle": {"cycle_id": ..., "trigger": ...}}` line
per trading cycle (trigger: schedule, manual or once) and one `{"t": ..., "pace": {"cycle_id":
..., "point": ...}}` line per instant a cycle read the market after its decisions (`risk`, and
`fill:<trader>` for each trader's execution; see `engine.market.pacing`), so a replay starts each
cycle at its recorded instant, gives it the recorded id, its traders the recorded answers, and
fills each trader against the book as it was at the recorded instant. When trading halts or
resumes (engine.halt: storage could not record), a `{"t": ..., "halt": {"halted": true, "reason":
"storage (...)"}}` line (`"halted": false, "reason": null` at resuming) notes the instant. The
feed's replay skips those lines; it only moves the clock to their times.

Replay moves the `SimClock` to each frame's receive time before handing the frame to
`Feed.handle_frame`, so timers (the 5-minute cycles) fire at the recorded times. At `speed=None`
it runs as fast as the engine keeps up; at `speed=X` it waits in real time, X times faster than
recorded.
"""

from __future__ import annotations

import gzip
import hashlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

from engine.market.candles import Candle

log = structlog.get_logger("feed")

FLUSH_EVERY_S = 5.0  # recorded frames reach the disk at least this often
HANDOFF_BYTES = 1 << 20  # or as soon as this much is buffered


def _open(path: str | Path, mode: str) -> IO[bytes]:
    if str(path).endswith(".gz"):
        return gzip.open(path, mode)  # type: ignore[return-value]
    return open(path, mode)


class FrameRecorder:
    """Appends every raw frame with its receive time to a JSON-lines file.

    The event loop only serializes a line and appends it to a buffer; compressing and writing
    happen in the recorder's own thread, which receives the buffer every FLUSH_EVERY_S of
    recorded time (or every HANDOFF_BYTES), so a gzip recording never blocks the feed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._fh = _open(self.path, "ab")
        self._flushed_at = 0.0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._closed = False
        self.frames = 0
        self.write_errors = 0
        self._chunks: queue.SimpleQueue[bytes | threading.Event | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name=f"recorder:{self.path}",
                                        daemon=True)
        self._thread.start()

    def write(self, raw: str | bytes, recv_time: float) -> None:
        """Record one frame."""
        if isinstance(raw, bytes | bytearray | memoryview):
            raw = bytes(raw).decode("utf-8", errors="replace")
        self.frames += 1
        self._add(orjson.dumps({"t": recv_time, "raw": raw}), recv_time)

    def write_backfill(self, symbol: str, interval: str, candles: list[Candle],
                       recv_time: float) -> None:
        """Record candles a backfill fetched."""
        record = {"symbol": symbol, "interval": interval, "candles": [list(c) for c in candles]}
        self._add(orjson.dumps({"t": recv_time, "backfill": record}), recv_time)

    def write_record(self, kind: str, payload: dict[str, Any], t: float) -> None:
        """Record one non-market line (`kind` is "llm" or "cycle") at engine time `t`."""
        if self._closed:
            log.warning("feed.record_closed", kind=kind, detail="recording already closed")
            return
        self._add(orjson.dumps({"t": t, kind: payload}), t)

    def _add(self, line: bytes, t: float) -> None:
        if self._closed:
            return
        self._pending.append(line + b"\n")
        self._pending_bytes += len(line) + 1
        if self._pending_bytes >= HANDOFF_BYTES or t - self._flushed_at >= FLUSH_EVERY_S:
            self._handoff()
            self._flushed_at = t

    def _handoff(self) -> None:
        if self._pending:
            self._chunks.put(b"".join(self._pending))
            self._pending.clear()
            self._pending_bytes = 0

    def _drain(self) -> None:
        """The recorder thread: compress and write each chunk, flush, close at the end."""
        while (item := self._chunks.get()) is not None:
            if isinstance(item, threading.Event):
                item.set()  # everything before it is written
                continue
            try:
                self._fh.write(item)
                self._fh.flush()
            except (OSError, ValueError) as exc:
                self.write_errors += 1
                log.error("feed.record_failed", path=self.path, error=repr(exc))
        try:
            self._fh.close()
        except OSError as exc:
            log.error("feed.record_failed", path=self.path, error=repr(exc))

    def flush(self) -> None:
        """Push what was recorded so far to the file (waits for the recorder thread)."""
        if self._closed:
            return
        self._handoff()
        done = threading.Event()
        self._chunks.put(done)
        done.wait(timeout=30)

    def close(self) -> None:
        """Write what is buffered, close the file and end the thread."""
        if self._closed:
            return
        self._handoff()
        self._closed = True
        self._chunks.put(None)
        self._thread.join(timeout=60)


Record = str | dict[str, Any]  # a raw frame, or a backfill record
KINDS = ("raw", "backfill", "llm", "cycle", "batch", "pace", "halt")  # a recording's line kinds


def iter_records(path: str | Path) -> Iterator[tuple[float, str, Any]]:
    """Yield (time, kind, payload) for every line; skip (and log) unreadable lines."""
    bad = 0
    with _open(path, "rb") as fh:
        for line in fh:
            try:
                rec = orjson.loads(line)
                t = float(rec["t"])
                kind = next(k for k in KINDS if k in rec)
                item = rec[kind]
                if not isinstance(item, str if kind == "raw" else list if kind == "batch"
                                  else dict):
                    raise TypeError(f"bad {kind} record")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, StopIteration):
                bad += 1
                continue
            yield t, kind, item
    if bad:
        log.warning("feed.replay_bad_lines", path=str(path), lines=bad)


def read_frames(path: str | Path) -> Iterator[tuple[float, Record]]:
    """Yield (receive time, raw frame or backfill record); LLM and cycle lines are left out."""
    for t, kind, item in iter_records(path):
        if kind in ("raw", "backfill"):
            yield t, item


def read_session(path: str | Path) -> tuple[list[dict[str, Any]], list[tuple[float, str]]]:
    """Return a recording's LLM records and its (time, cycle id) list, in file order."""
    timing = read_timing(path)
    return timing.llm, [(t, cycle_id) for t, cycle_id, _ in timing.cycles]


@dataclass(slots=True)
class SessionTiming:
    """What a session recording says besides the market: LLM calls, cycles and pace points."""

    llm: list[dict[str, Any]] = field(default_factory=list)
    cycles: list[tuple[float, str, str]] = field(default_factory=list)  # (start, id, trigger)
    pace: dict[tuple[str, str], float] = field(default_factory=dict)  # (cycle id, point) → t


_SESSION_KEYS = (b'"llm":', b'"cycle":', b'"pace":')


def read_timing(path: str | Path) -> SessionTiming:
    """Return a recording's LLM records, cycles (start, id, trigger) and pace points.

    Market lines, by far the most, are never parsed: a megabyte block without an `"llm":`,
    `"cycle":` or `"pace":` key (which only appear unescaped at the top of their own lines) is
    skipped whole.
    """
    out = SessionTiming()
    with _open(path, "rb") as fh:
        tail = b""
        while True:
            chunk = fh.read(1 << 20)
            buf = tail + chunk
            cut = len(buf) if not chunk else buf.rfind(b"\n") + 1
            block, tail = buf[:cut], buf[cut:]
            if any(k in block for k in _SESSION_KEYS):
                for line in block.splitlines():
                    _session_line(line, out)
            if not chunk:
                break
    return out


def _session_line(line: bytes, out: SessionTiming) -> None:
    if not any(k in line for k in _SESSION_KEYS):
        return
    try:
        rec = orjson.loads(line)
        t = float(rec["t"])
        if isinstance(rec.get("llm"), dict):
            out.llm.append({**rec["llm"], "t": t})
        elif isinstance(rec.get("cycle"), dict):
            c = rec["cycle"]
            out.cycles.append((t, str(c["cycle_id"]), str(c.get("trigger") or "schedule")))
        elif isinstance(rec.get("pace"), dict):
            out.pace[(str(rec["pace"]["cycle_id"]), str(rec["pace"]["point"]))] = t
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return  # iter_records counts and logs bad lines


class CycleIds:
    """Cycle ids: random live (`engine.cycle.new_cycle_id`), the recorded ones in a replay.

    A session replay fires each recorded cycle at its recorded start instant
    (`engine.market.pacing.RecordedCycles`), and the cycle starting at that instant takes that
    cycle's id, so the prompts, whose first line names the cycle, hash as they did live; failing
    an exact match it takes the recorded id of the same UTC second (each id once). When the
    recording holds cycles, a cycle in a second where the recorded run ran none is skipped
    (`SkipCycle("not_in_recording")`), so the replay runs exactly the recorded cycles. A
    recording without cycle lines (market only, a backtest) runs every cycle, with an id derived
    from its time and its rank in that second, the same in every run. With a recorder, every id
    is written as a `cycle` line with its trigger (schedule, manual, once) at the cycle's start.
    """

    def __init__(self, *, recorded: list[tuple[float, str]] | None = None,
                 deterministic: bool = False, recorder: FrameRecorder | None = None) -> None:
        self._recorded: dict[str, list[str]] = {}
        self._at: dict[float, list[str]] = {}
        for t, cycle_id in recorded or ():
            self._recorded.setdefault(cycle_id.split("-", 1)[0], []).append(cycle_id)
            self._at.setdefault(t, []).append(cycle_id)
        self._deterministic = deterministic or recorded is not None
        self._session = bool(recorded)  # the recording says which cycles ran
        self._recorder = recorder
        self._seen: dict[str, int] = {}

    def __call__(self, now: float, trigger: str = "schedule") -> str:
        from engine.cycle import new_cycle_id

        prefix = f"{datetime.fromtimestamp(now, UTC):%Y%m%dT%H%M%SZ}"
        queue = self._recorded.get(prefix)
        exact = self._at.get(now)
        if exact:
            cycle_id = exact.pop(0)
            if queue and cycle_id in queue:
                queue.remove(cycle_id)
        elif queue:
            cycle_id = queue.pop(0)
        elif self._deterministic:
            rank = self._seen.get(prefix, 0)
            self._seen[prefix] = rank + 1
            cycle_id = f"{prefix}-{hashlib.sha256(f'{prefix}/{rank}'.encode()).hexdigest()[:6]}"
            if self._session:
                from engine.cycle import SkipCycle

                raise SkipCycle("not_in_recording", cycle_id)
        else:
            cycle_id = new_cycle_id(now)
        if self._recorder is not None:
            self._recorder.write_record("cycle", {"cycle_id": cycle_id, "trigger": trigger}, now)
        return cycle_id


def first_frame_time(path: str | Path) -> float | None:
    """Return the receive time of the first frame in a recorded file (to start a SimClock there)."""
    for t, _ in read_frames(path):
        return t
    return None
