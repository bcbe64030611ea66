"""The C allocator's settings for a long-running engine.

glibc raises its mmap threshold each time a large block is freed (up to 32 MB), so the next large
numpy temporaries — the leaderboard's bootstrap matrices grow by a row of resamples every cycle —
are carved from the heap instead of mapped, and the heap grows and fragments: a 24 h soak's
resident memory crept ~0.5 MB an hour (5.4 % from hour 1 to the end). Pinning the threshold at
glibc's own default (128 KiB), which also turns off that adjustment, keeps large blocks mapped
and returned on free. It does not make growth vanish: the soak measured when this was added went
from 5.4 % to -2.1 % (median of its runs), and a later full run's three soaks grew 6.37, 1.59 and
0.40 % from hour 1 to the end, so `bench/soak.py` now reports the worst run
(docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import structlog

log = structlog.get_logger("app")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 128 * 1024  # glibc's default before any adjustment


def pin_malloc_threshold() -> bool:
    """Fix glibc's mmap threshold at its default; return whether it was set (glibc only)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # no such library or symbol: leave the allocator alone
        return False
    log.debug("engine.malloc_pinned", mmap_threshold=MMAP_THRESHOLD, ok=done)
    return done
