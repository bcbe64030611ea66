"""The frame recorder keeps compression and file writes off the event loop's thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from engine.market.recording import FLUSH_EVERY_S, FrameRecorder, read_frames


class ThreadSpy:
    """Wraps the recorder's file object and notes which thread writes to it."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.writers: set[str] = set()

    def write(self, data: bytes) -> int:
        self.writers.add(threading.current_thread().name)
        return self._fh.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


@pytest.mark.parametrize("name", ["frames.jsonl.gz", "frames.jsonl"])
def test_frames_are_written_by_the_recorder_thread_and_read_back_in_order(
        tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    recorder = FrameRecorder(path)
    spy = ThreadSpy(recorder._fh)
    recorder._fh = spy  # type: ignore[assignment]
    frames = [(1_767_225_600.0 + i * 0.25, f'{{"stream":"btcusdt@bookTicker","i":{i}}}')
              for i in range(2_000)]  # 500 s of frames: about 100 hand-offs
    for t, raw in frames:
        recorder.write(raw, t)
    recorder.close()
    assert spy.writers == {f"recorder:{path}"}  # never the loop's (this) thread
    assert list(read_frames(path)) == frames
    assert recorder.frames == 2_000 and recorder.write_errors == 0


def test_writes_within_the_flush_interval_stay_in_memory_until_flush(tmp_path: Path) -> None:
    path = tmp_path / "frames.jsonl"
    recorder = FrameRecorder(path)
    recorder.write('{"a":1}', 100.0)  # the first line is handed off (nothing flushed yet)
    recorder.flush()
    size = path.stat().st_size
    for i in range(10):
        recorder.write(f'{{"a":{i}}}', 100.0 + (FLUSH_EVERY_S / 20) * i)
    assert path.stat().st_size == size  # buffered: no write on the caller's thread
    recorder.flush()
    assert path.stat().st_size > size
    assert len(path.read_bytes().splitlines()) == 11
    recorder.close()
    recorder.close()  # idempotent
