"""Budgets shared by all requests at once: pixels being decoded, bytes of request bodies held.

Per-request limits (16 files, 20 MB, 40 megapixels per image) do not bound a server: 16
concurrent requests of 16 palette PNGs of 39.6 megapixels each (39 KB apiece, well inside every
per-request limit) took it from 0.7 to 4.2 GB, valid images failed with MemoryError, and 3.4 GB
stayed held afterwards (issue 18). A `Budget` counts units (pixels read from image headers, or
body bytes) in use across every request; a request takes its share before the work and gives it
back after. When the budget is full it waits up to `wait_s` for room, then is refused with 503
and a Retry-After header, so a flood slows down or is turned away instead of taking memory.

Room is granted to whichever waiter fits, not first come first served: a 28x28 digit never
waits behind two 40-megapixel photos, and a single item larger than the whole budget still runs
(alone), so no valid request is refused for its size alone.

Freed memory must also go back to the operating system. glibc raises its mmap threshold each
time a large block is freed, up to 32 MB, so Pillow's 16 MB image blocks soon come from the heap
arenas (one per decoding thread) and stay there: 24 decodes of a 39.6-megapixel palette PNG, two
at a time, left a process at 970 MB from 689 MB. `return_large_blocks` fixes the threshold at 4 MB,
so every image block is its own mapping, unmapped when freed (peak 728 MB, 691 MB afterwards);
`trim_memory` (malloc_trim) returns what the heap still holds once decoding is idle.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import math
from typing import Any

from cnnlab.serve.uploads import UploadError

__all__ = ["Budget", "trim_memory", "return_large_blocks"]


class Budget:
    """Units in use across all requests; `acquire` waits up to `wait_s` for room, else raises 503.

    >>> budget = Budget(100, "pixels being decoded", wait_s=0.01)
    >>> async def two():
    ...     first = await budget.acquire(80)
    ...     try:
    ...         await budget.acquire(30)
    ...     except UploadError as e:
    ...         print(e.status, e.retry_after, budget.in_use)
    ...     budget.release(first)
    ...     return await budget.acquire(30), budget.in_use
    >>> asyncio.run(two())
    503 1 80
    (30, 30)
    """

    def __init__(self, capacity: int, what: str, wait_s: float) -> None:
        self.capacity = capacity
        self.what = what                      # for the 503 message: "pixels being decoded"
        self.wait_s = wait_s
        self.in_use = 0
        self.peak = 0                         # the most ever in use at once (tests, benchmarks)
        self.refused = 0
        self._changed: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def acquire(self, units: int) -> int:
        """Take `units` (at most the whole budget); returns what was taken, to `release` later."""
        units = min(units, self.capacity)  # larger than the budget: runs once nothing else does
        changed = self._condition()
        async with changed:
            try:
                await asyncio.wait_for(changed.wait_for(lambda: self.in_use + units <= self.capacity), self.wait_s)
            except TimeoutError:
                self.refused += 1
                raise UploadError(503, f"the server is busy: {self.in_use:,} {self.what} of at most "
                                       f"{self.capacity:,}, and {units:,} more did not fit within {self.wait_s:g} s; "
                                       f"retry later", retry_after=max(1, math.ceil(self.wait_s))) from None
            self.in_use += units
            self.peak = max(self.peak, self.in_use)
        return units

    def release(self, units: int) -> None:
        """Give back what `acquire` returned (call it on the event loop's thread)."""
        self.in_use -= units
        changed = self._changed
        if changed is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.create_task(self._notify(changed))

    async def _notify(self, changed: asyncio.Condition) -> None:
        async with changed:
            changed.notify_all()

    def _condition(self) -> asyncio.Condition:
        # One condition per event loop: test clients may run each request in a fresh loop.
        loop = asyncio.get_running_loop()
        if self._changed is None or self._loop is not loop:
            self._changed, self._loop = asyncio.Condition(), loop
        return self._changed


_LIBC = ctypes.util.find_library("c")
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def _glibc(name: str) -> Any:
    if _LIBC is None:
        return None
    try:
        return getattr(ctypes.CDLL(_LIBC), name)
    except (OSError, AttributeError):  # musl, macOS: no such function
        return None


def trim_memory() -> bool:
    """Return freed heap memory to the operating system (glibc's malloc_trim); False where unavailable.

    >>> isinstance(trim_memory(), bool)
    True
    """
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))


def return_large_blocks(threshold: int = 4 * 1024 * 1024) -> bool:
    """Make every allocation of `threshold` bytes or more a mapping of its own, returned when freed
    (glibc's M_MMAP_THRESHOLD, process-wide; the server process calls it); False where unavailable.

    >>> isinstance(return_large_blocks(), bool)
    True
    """
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
