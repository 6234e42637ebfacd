"""Keep the memory a CPU training step frees, so the next step reuses it instead of faulting in fresh pages.

Eager PyTorch frees every activation and gradient at the end of a step and allocates them again in the
next. glibc's malloc hands blocks above its mmap threshold (128 KiB, rising with use to at most 32 MiB)
straight back to the kernel and trims the heap's free top beyond its trim threshold, so each step's
tensors land on fresh pages: the kernel zero-fills and maps every 4 KiB page on first touch. Measured
on the project's 2-core AMD EPYC VM (2026-12-07, seed 004's CIFAR-10 CNN, 1 epoch of `fit`, bf16):
2,770,927 page faults (1,770 a step) and 21.5 s with glibc's defaults; 83,019 faults and 12.6 s with
the thresholds below. TensorFlow keeps its own pool of freed memory, so this was part of the gap to it.

Applied once per process when a runtime prepares a model for the CPU (`Runtime.prepare`), on Linux
with glibc only, and never over a user's own choice: `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
malloc settings in `GLIBC_TUNABLES`, or another allocator in `LD_PRELOAD` (jemalloc, tcmalloc, mimalloc)
leave glibc as the user set it. Memory stays bounded: a kept block is one the process held at its peak.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "allocator_policy", "keep_freed_memory"]

MIB = 1024 * 1024
# Blocks smaller than this come from the heap and are reused after a free. The largest activation of a
# transfer-learning step (batch 32, 224 px, 32 channels at 112x112, fp32) is 49 MiB, so every tensor of the
# steps cnnlab runs by default stays below it.
MMAP_THRESHOLD_BYTES = 256 * MIB
# Free memory at the top of the heap that is kept for the next step rather than given back to the kernel:
# twice the mmap threshold, as glibc's own dynamic rule keeps it.
TRIM_THRESHOLD_BYTES = 512 * MIB
OLD_GLIBC_MMAP_MAX_BYTES = 32 * MIB  # the highest mmap threshold glibc before 2.35 accepts (half its 64 MiB heap)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers, glibc's malloc.h

_applied: str | None = None  # what keep_freed_memory did in this process, once it ran


def allocator_policy() -> str:
    """What `keep_freed_memory` did in this process, or, before it has run, what it will do.

    >>> allocator_policy().startswith(("glibc malloc keeps", "malloc left as it is"))
    True
    """
    return _applied if _applied is not None else _left_alone() or _kept(MMAP_THRESHOLD_BYTES)


def keep_freed_memory() -> str:
    """Set glibc's thresholds for this process (once; later calls only return what was done), unless left alone.

    >>> keep_freed_memory() == keep_freed_memory() == allocator_policy()
    True
    """
    global _applied
    if _applied is None:
        _applied = _left_alone() or _apply()
    return _applied


def _left_alone() -> str | None:
    """Why malloc is left as it is in this process, or None when cnnlab sets its thresholds."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "malloc left as it is: not Linux with glibc"
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return "malloc left as it is: another allocator is preloaded (LD_PRELOAD)"
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")) \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "malloc left as it is: its thresholds are set in the environment"
    return None


def _apply() -> str:
    libc = ctypes.CDLL("libc.so.6")
    # an older glibc refuses thresholds above its own upper limit: then that limit
    mmap = next((size for size in (MMAP_THRESHOLD_BYTES, OLD_GLIBC_MMAP_MAX_BYTES)
                 if libc.mallopt(_M_MMAP_THRESHOLD, size) == 1), None)
    if mmap is None:
        return "malloc left as it is: glibc refused the mmap threshold (mallopt)"
    if libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) != 1:
        return "malloc: glibc refused the trim threshold (mallopt); freed memory is kept only below it"
    return _kept(mmap)


def _kept(mmap_bytes: int) -> str:
    return f"glibc malloc keeps freed memory for reuse (mmap threshold {mmap_bytes // MIB} MiB, " \
           f"trim threshold {TRIM_THRESHOLD_BYTES // MIB} MiB)"
