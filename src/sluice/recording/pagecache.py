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
from pathlib import Path
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
    their pages go when the finisher has fsynced them. For a log that does,
    the thread opens the file by its path for each job and closes it again:
    a session holds no descriptor for it between jobs (the writer's own may
    be closed while jobs are queued), so a large log costs its session no
    more descriptors than a small one, which the session caps count on."""

    __slots__ = ("_path", "_releaser", "_started", "_written")

    def __init__(self, releaser: PageCacheReleaser, path: Path) -> None:
        self._releaser = releaser
        self._path = path
        self._written = 0
        self._started = 0  # write-back requested up to here

    def wrote(self, size: int) -> None:
        """`size` more bytes were appended to the log."""
        self._written += size
        if self._written - self._started >= RELEASE_CHUNK_BYTES:
            self._releaser.submit(self._path, self._started, self._written, False)
            self._started = self._written

    @property
    def large(self) -> bool:
        """The thread has had a job for this log."""
        return self._started > 0

    def close(self) -> None:
        """The log is complete: drop all of it (a small one: the finisher does)."""
        if self._started > 0:
            self._releaser.submit(self._path, self._started, self._written, True)
            self._started = 0


class PageCacheReleaser:
    """One daemon thread per process, started on first use."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Path, int, int, bool] | threading.Event] = (
            queue.SimpleQueue()
        )
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    def after_fork(self) -> None:
        """A forked child has no thread and none of the parent's jobs."""
        self._jobs = queue.SimpleQueue()
        self._worker = None
        self._lock = threading.Lock()

    def track(self, path: Path) -> ReleasedLog | None:
        """Bookkeeping for a log just created at `path`, or None where not supported."""
        if _sync_file_range is None:
            return None
        return ReleasedLog(self, path)

    def submit(self, path: Path, start: int, end: int, last: bool) -> None:
        self._start()
        self._jobs.put((path, start, end, last))

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every job submitted so far is done; False on a timeout."""
        if self._worker is None:
            return True
        done = threading.Event()
        self._jobs.put(done)
        return done.wait(timeout)

    def _start(self) -> None:
        if self._worker is None:
            with self._lock:
                if self._worker is None:
                    thread = threading.Thread(
                        target=self._run, name="sluice-log-release", daemon=True
                    )
                    thread.start()
                    self._worker = thread

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

    def _release(self, path: Path, start: int, end: int, last: bool) -> None:
        assert _sync_file_range is not None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # deleted (retention) or out of descriptors: advice only
            return
        try:
            if last:
                # Sealed logs are fsynced first, so every page is clean and goes;
                # a log given up without the fsync keeps its dirty pages (skipped).
                with contextlib.suppress(OSError):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                return
            _sync_file_range(fd, start, end - start, _SYNC_FILE_RANGE_WRITE)
            # Everything before the part just started is let go. Pages still
            # being written are skipped by the kernel and let go by a later
            # job; from the log's start each time, since the kernel only
            # visits the pages still cached.
            if start > 0:
                with contextlib.suppress(OSError):
                    os.posix_fadvise(fd, 0, start, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


RELEASER: Final = PageCacheReleaser()
"""The process's releaser (its thread starts with the first large log)."""

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=RELEASER.after_fork)
