"""Host memory: keep what torch frees in the process instead of handing it back to the system.

Trajectory matching on the CPU allocates and frees the same large activations (tens of MB
each) several times per student step. glibc serves every block above its mmap threshold
(32 MB at most) with a fresh ``mmap`` and returns it with ``munmap`` when freed, so each step
page-faults its activations in again and the kernel zeroes every page. Keeping them made an
iteration on a ConvNet-3 of width 128 at IPC 10 take about two thirds of the CPU time
(``benchmarks/unroll_memory.py --allocator``, ``benchmarks/RESULTS.md``); expert training and
TGDD have the same pattern (an expert's step at width 128 took 0.57x the time, a TGDD
iteration 0.90x: ``benchmarks/allocator_effect.py``).

:func:`keep_freed_memory` tells glibc (``mallopt``) to serve every block from its heap and to
keep up to 2 GiB of freed memory for reuse. The process's resident memory then stays near its
peak instead of falling back between steps, and the peak itself can be higher (blocks of
different sizes share one heap: about a quarter higher for ``unroll`` in that benchmark).
``lit-distill`` calls it at start-up. Set ``LIT_DISTILL_ALLOCATOR=system`` to keep glibc's
defaults; on other C libraries and systems it does nothing. CUDA memory has its own caching
allocator and is not affected.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: The environment variable that turns the setting off (``system``).
ENV = "LIT_DISTILL_ALLOCATOR"

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Freed memory at the top of the heap kept for reuse (the largest value mallopt accepts).
_KEEP_BYTES = 2**31 - 1


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse; True when the setting took effect.

    Does nothing (False) when ``LIT_DISTILL_ALLOCATOR=system``, off Linux, or when the C
    library is not glibc.
    """
    libc = glibc()
    if libc is None or os.environ.get(ENV, "").strip().lower() == "system":
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))


def glibc() -> ctypes.CDLL | None:
    """This process's C library when it is glibc on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        getattr(libc, "gnu_get_libc_version")  # noqa: B009  glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    return libc
