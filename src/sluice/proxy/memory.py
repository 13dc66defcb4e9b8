"""Give the memory of ended sessions back to the operating system.

glibc's malloc keeps what a process frees in its arenas for reuse and hands
back only what sits at the top of a heap. A gateway that held a burst of
sessions (their TLS buffers, frames and records) keeps that memory after
they end: measured on a governed gateway, 114 MB at start, 137 MB holding
100 idle sessions and still 133 MB once they had closed; `malloc_trim(0)`
brought it to 117. The trimmer calls it once the number of open sessions
has fallen well below its peak, after the burst has finished closing; a
steady load, where as many sessions start as end, never triggers it.

Sessions that stay open leave memory behind too: after a large result the
heap holds the freed buffers that carried it, in holes between live objects
(about 600 KiB per session that read 1.2 MB). When such a session goes idle
(`idle_release`, after its TLS read buffers gave their pages back) the
trimmer trims once more, `delay` later, so one trim serves every session
that went idle meanwhile.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

TRIM_DELAY: Final = 2.0
"""Seconds from the fall that triggers a trim to the trim: the rest of a
closing burst ends meanwhile."""

TRIM_MIN_DROP: Final = 32
"""Sessions fewer than the peak, at least, for a trim: below that the memory
to return is a few MB, not worth walking the heap (milliseconds)."""


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class MemoryTrimmer:
    """Counts open connections; trims the heap after their number falls.

    `opened` and `closed` are called on the event loop, once per connection;
    the trim runs there too (milliseconds, only after a large fall).
    """

    def __init__(self, *, delay: float = TRIM_DELAY, min_drop: int = TRIM_MIN_DROP) -> None:
        self._trim = _malloc_trim()
        self._delay = delay
        self._min_drop = min_drop
        self._open = 0
        self._peak = 0
        self._pending: asyncio.TimerHandle | None = None
        self.trims = 0
        self.idle_releases = 0
        self.released_bytes = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def opened(self) -> None:
        self._open += 1
        if self._open > self._peak:
            self._peak = self._open

    def closed(self) -> None:
        self._open -= 1
        if self._trim is None or self._pending is not None:
            return
        fallen = self._peak - self._open
        if fallen >= self._min_drop and self._open <= self._peak // 2:
            self._pending = asyncio.get_running_loop().call_later(self._delay, self.trim)

    def idle_release(self, released: int) -> None:
        """A session went idle after a large read; its TLS buffers handed
        back `released` bytes. Trims the heap `delay` from now."""
        self.idle_releases += 1
        self.released_bytes += released
        if self._trim is None or self._pending is not None:
            return
        self._pending = asyncio.get_running_loop().call_later(self._delay, self.trim)

    def trim(self) -> None:
        """Return the heap's free memory to the OS now."""
        self._pending = None
        self._peak = self._open
        if self._trim is None:
            return
        began = time.perf_counter()
        self._trim(0)
        self.trims += 1
        log.debug("heap trimmed in %.1f ms", (time.perf_counter() - began) * 1000)

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
