"""Counting a recording's market frames and their time span without parsing them.

`count_frames` reads the file a megabyte at a time. A block of market lines only is counted with
`bytes.count`: there a `"raw":`, `"backfill":` or `"batch":` key only appears unescaped at the top
of its own line (frames are escaped strings inside), and a batch counts as one, as
`Replay.frames` does. A block holding a session line (an LLM call, a cycle, a pace point, a halt:
their records may hold such keys deeper) is counted line by line, each line parsed as the replay
parses it. Only the first and last market lines are parsed, for their times.

A replay counts its file while it runs, for its progress (engine.market.progress), and does it in
a process of its own by running this file as a script (`python framecount.py FILE` prints
`[frames, first time, last time]` as JSON), so it imports nothing from the engine. A count that is
no longer wanted is killed; if the engine itself is killed, the count ends at the end of the file,
its answer going nowhere. In a thread of the engine's process the count took the interpreter lock
back from the replay after every block it decompressed: a 2-hour replay of bench.soak's market
through the engine (its trading cycles off) took 2.8-3.0 s with the count in a thread and
2.1-2.3 s without a count (measured here).
"""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path

import orjson

_MARKET_KEYS = (b'"raw":', b'"backfill":', b'"batch":')
_SESSION_KEYS = (b'"llm":', b'"cycle":', b'"pace":', b'"halt":')
_KINDS = ("raw", "backfill", "llm", "cycle", "batch", "pace", "halt")  # as recording.KINDS
_BLOCK = 1 << 20


def _open(path: str | Path) -> gzip.GzipFile | io.BufferedReader:
    if str(path).endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def count_frames(path: str | Path) -> tuple[int, float | None, float | None]:
    """Return (market frames, first frame time, last frame time) of a recording."""
    frames: int = 0
    first: bytes | None = None
    last: bytes | None = None
    with _open(path) as fh:
        tail = b""
        while True:
            chunk = fh.read(_BLOCK)
            buf = tail + chunk
            cut = len(buf) if not chunk else buf.rfind(b"\n") + 1
            block, tail = buf[:cut], buf[cut:]
            if any(k in block for k in _SESSION_KEYS):
                market = [line for line in block.splitlines() if _is_market(line)]
                found = len(market)
                if found:
                    first = first if first is not None else market[0]
                    last = market[-1]
            else:
                found = sum(block.count(key) for key in _MARKET_KEYS)
                if found:
                    first = first if first is not None else _line_at(block, min(
                        i for k in _MARKET_KEYS if (i := block.find(k)) >= 0))
                    last = _line_at(block, max(block.rfind(k) for k in _MARKET_KEYS))
            frames += found
            if not chunk:
                break
    return frames, _time(first), _time(last)


def _is_market(line: bytes) -> bool:
    """Tell whether `line` is a market record (the first of `_KINDS` among its keys)."""
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    kind = next((k for k in _KINDS if k in rec), None) if isinstance(rec, dict) else None
    return kind in ("raw", "backfill", "batch")


def _line_at(block: bytes, pos: int) -> bytes:
    """Return the line of `block` holding offset `pos`."""
    end = block.find(b"\n", pos)
    return block[block.rfind(b"\n", 0, pos) + 1:end if end >= 0 else len(block)]


def _time(line: bytes | None) -> float | None:
    if line is None:
        return None
    try:
        return float(orjson.loads(line)["t"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


if __name__ == "__main__":
    sys.stdout.buffer.write(orjson.dumps(count_frames(sys.argv[1])))
