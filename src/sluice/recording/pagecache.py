"""Keep session logs from piling up in the page cache.

A session log is written once and read rarely, yet every byte of it passes
through the page cache. Left alone, a gateway streaming large results keeps
hundreds of megabytes of dirty log pages: the kernel throttles the writing
thread (the event loop) once they pass its dirty limit, and every new page
costs a fresh allocation. So once a log has grown by RELEASE_CHUNK_BYTES, a
background thread starts write-back of that part (sync_file_range) and drops
what was written before it from the cache (posix_fadvise DONTNEED), the way
PostgreSQL's `*_flush_after` settings do for its own files. The writer's pages
are recycled instead of piling up.

This is advice to the kernel, off the event loop: the thread never waits for
write-back and never checks its errors (so it cannot take an error that the
writer's own fsync must report), and where the calls do not exist (not Linux)
nothing is done.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

RELEASE_CHUNK_BYTES: Final = 256 * 1024
"""Write-back is started for each part of a log this long once it is written.
Small enough that a busy session's log recycles its pages too (on `pgbench -S`
through the governed gateway, 256 KiB took 8% less CPU per transaction than 8 MiB)."""

_SYNC_FILE_RANGE_WRITE: Final = 2  # start write-back of dirty pages; do not wait


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not hasattr(os, "posix_fadvise"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    func.restype = ctypes.c_int
    return func


_sync_file_range = _load_sync_file_range()


class ReleasedLog:
    """The page-cache bookkeeping of one log file; fed by its writer's writes.

    Most logs never reach RELEASE_CHUNK_BYTES: they cost nothing here, and
    their pages go when the finisher has fsynced them. A log that does gets
    a descriptor of its own for the thread (the writer may close its fd
    while jobs are queued), taken as it passes the first chunk."""

    __slots__ = ("_fd", "_releaser", "_source", "_started", "_written")

    def __init__(self, releaser: PageCacheReleaser, fd: int) -> None:
        self._releaser = releaser
        self._source = fd  # the writer's: valid while it calls `wrote`
        self._fd = -1  # the thread's own handle, once the log is large
        self._written = 0
        self._started = 0  # write-back requested up to here

    def wrote(self, size: int) -> None:
        """`size` more bytes were appended to the log."""
        self._written += size
        if self._written - self._started >= RELEASE_CHUNK_BYTES:
            if self._fd < 0:
                if self._source < 0:
                    return
                try:
                    self._fd = os.dup(self._source)
                except OSError as exc:  # out of descriptors: the log is written as before
                    log.debug("page-cache release off for one log: %s", exc)
                    self._source = -1
                    return
            self._releaser.submit(self._fd, self._started, self._written, False)
            self._started = self._written

    @property
    def large(self) -> bool:
        """The thread holds a descriptor of this log."""
        return self._fd >= 0

    def close(self) -> None:
        """The log is complete: drop all of it, then close the handle."""
        self._source = -1
        if self._fd >= 0:
            self._releaser.submit(self._fd, self._started, self._written, True)
            self._fd = -1


class PageCacheReleaser:
    """One daemon thread per process, started on first use."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[int, int, int, bool] | threading.Event] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def after_fork(self) -> None:
        """A forked child has no thread and none of the parent's jobs."""
        self._jobs = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()

    def track(self, fd: int) -> ReleasedLog | None:
        """Bookkeeping for a log just created on `fd`, or None where not supported."""
        if _sync_file_range is None:
            return None
        return ReleasedLog(self, fd)

    def submit(self, fd: int, start: int, end: int, last: bool) -> None:
        self._start()
        self._jobs.put((fd, start, end, last))

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every job submitted so far is done; False on a timeout."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._jobs.put(done)
        return done.wait(timeout)

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    thread = threading.Thread(
                        target=self._run, name="sluice-log-release", daemon=True
                    )
                    thread.start()
                    self._thread = thread

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if isinstance(job, threading.Event):
                job.set()
                continue
            try:
                self._release(*job)
            except Exception:  # advice only: never let the thread die
                log.debug("page-cache release failed", exc_info=True)

    def _release(self, fd: int, start: int, end: int, last: bool) -> None:
        assert _sync_file_range is not None
        if last:
            # Sealed logs are fsynced first, so every page is clean and goes;
            # a log given up without the fsync keeps its dirty pages (skipped).
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            return
        _sync_file_range(fd, start, end - start, _SYNC_FILE_RANGE_WRITE)
        # Everything before the part just started is let go. Pages still being
        # written are skipped by the kernel and let go by a later job; from
        # the log's start each time, since the kernel only visits the pages
        # still cached.
        if start > 0:
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, start, os.POSIX_FADV_DONTNEED)


RELEASER: Final = PageCacheReleaser()
"""The process's releaser (its thread starts with the first large log)."""

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=RELEASER.after_fork)
