"""glibc's mmap threshold is pinned, so large freed blocks do not move later ones onto the heap;
the start-up heap is frozen once the engine is ready, so full collections skip it, and thawed when
the engine stops; a full collection runs on the engine clock's timer."""

from __future__ import annotations

import asyncio
import gc
import platform
import subprocess
import sys
import weakref

import pytest

from engine.app.memory import GarbageCollector
from engine.clock import SimClock

PROBE = """
import ctypes, ctypes.util, sys
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                              "usmblks", "fsmblks", "uordblks", "fordblks",
                                              "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "pin":
    from engine.app.memory import pin_malloc_threshold
    assert pin_malloc_threshold()
big = np.ones(500_000)  # 4 MB: a mapped block
del big  # freed: glibc raises its threshold to 4 MB, unless pinned
before = libc.mallinfo2().hblks
kept = np.ones(125_000)  # 1 MB: mapped only below the threshold
print(libc.mallinfo2().hblks - before)
"""


def mapped_blocks_after_a_large_free(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_a_large_block_stays_mapped_after_a_larger_one_was_freed() -> None:
    assert mapped_blocks_after_a_large_free("free") == 0  # glibc's own adjustment: heap
    assert mapped_blocks_after_a_large_free("pin") == 1  # pinned: mapped, returned on free


def test_elsewhere_the_allocator_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.app import memory

    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert memory.pin_malloc_threshold() is False


def test_the_start_up_heap_is_frozen_and_what_the_run_allocates_is_not() -> None:
    from engine.app import memory

    class Node:
        def __init__(self) -> None:
            self.me = self  # a reference cycle: only the cyclic collector frees it

    before = Node()
    assert memory.freeze_startup_heap() == gc.get_freeze_count() > 0
    assert gc.is_tracked(before) and not any(before is o for o in gc.get_objects())  # frozen
    after = Node()
    assert any(after is o for o in gc.get_objects())  # the run's own objects are collected
    memory.thaw_heap()
    assert gc.get_freeze_count() == 0 and any(before is o for o in gc.get_objects())


class _Cycle:
    """Half of a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.other: _Cycle | None = None


async def test_the_collector_frees_reference_cycles_on_the_engine_clock() -> None:
    clock = SimClock(start=0.0)
    collector = GarbageCollector(clock, 3600.0)
    task = asyncio.create_task(collector.run())
    await clock.advance(0)
    gc.disable()  # only the collector under test may collect
    try:
        a, b = _Cycle(), _Cycle()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        await clock.advance(3599)
        assert gone() is not None and collector.runs == 0
        await clock.advance(1)
        assert gone() is None
        assert collector.runs == 1 and collector.collected >= 2 and collector.last_ms is not None
        await clock.advance(3600 * 3)
        assert collector.runs == 4
    finally:
        gc.enable()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_collection_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        GarbageCollector(SimClock(), 0)
