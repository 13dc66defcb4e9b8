"""Finish sealed session logs off the event loop: fsync, then close.

A session's last records are written on the event loop when it ends; the
fsync that makes the log durable can take a fraction of a millisecond for a
small log on an idle disk, and tens or hundreds of milliseconds for a large
log or on a busy or networked one. The loop serves every other session
meanwhile, so one session ending must not stall them all (the audit file
sink keeps its fsync off the loop for the same reason). Logs are finished
here, by a few threads of their own, so fsyncs never queue the other work
the gateway hands to threads (approval lookups use the loop's executor).

A log fsynced here is dropped from the page cache (a large one's earlier
parts already were: sluice.recording.pagecache). A failed fsync is
reported through the callback of its log (the writer's failure hook: it is
audited); `drain` waits for the logs handed over so far, for a gateway
stopping.

The queue is bounded: when sessions end faster than the disk syncs their
logs, each queued log holds its descriptor, so past `MAX_QUEUED_LOGS` a log
is fsynced where it was sealed, on the event loop. That slows the gateway
to the disk's pace (back-pressure) instead of running it out of
descriptors and memory.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

Finished = Callable[[OSError | None], None]
"""Called in a finisher thread once a log is closed: None, or the fsync's error."""

_DROP_CACHE: Final = hasattr(os, "posix_fadvise")

FINISH_THREADS: Final = 4
"""Logs fsynced at once. Concurrent fsyncs share the disk's flushes: on this
VM's ext4, one thread finished 3,400 small logs a second and four 9,100."""

MAX_QUEUED_LOGS: Final = 512
"""Logs handed over and not yet closed, past which a log is finished inline."""


class LogFinisher:
    """The process's finisher threads, started with the first log handed over."""

    def __init__(self, threads: int = FINISH_THREADS, max_queued: int = MAX_QUEUED_LOGS) -> None:
        self._threads = threads
        self._max_queued = max_queued
        self.finished_inline = 0
        """Logs finished by their caller because the queue was full."""
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._pool is not None

    def after_fork(self) -> None:
        """A forked child has no threads and none of the parent's logs."""
        self._pool = None
        self._pending = set()
        self._lock = threading.Lock()

    def submit(self, fd: int, finished: Finished) -> None:
        """fsync and close `fd` (the finisher owns it now), then call `finished`."""
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self._threads, thread_name_prefix="sluice-log-finish"
                )
            future: concurrent.futures.Future[None] | None = None
            if len(self._pending) >= self._max_queued:
                self.finished_inline += 1
                if self.finished_inline == 1 or self.finished_inline % 1000 == 0:
                    log.warning(
                        "%d session logs wait for their fsync: finishing this one inline "
                        "(%d so far); the recording disk is slower than sessions end",
                        len(self._pending),
                        self.finished_inline,
                    )
            else:
                try:
                    future = self._pool.submit(_finish, fd, finished)
                except RuntimeError:  # the interpreter is exiting: no new work for threads
                    future = None
                else:
                    self._pending.add(future)
        if future is None:
            _finish(fd, finished)
        else:
            future.add_done_callback(self._done)

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every log handed over so far is finished; False on a timeout."""
        with self._lock:
            pending = list(self._pending)
        _, not_done = concurrent.futures.wait(pending, timeout)
        return not not_done

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)


def _finish(fd: int, finished: Finished) -> None:
    error: OSError | None = None
    try:
        os.fsync(fd)
    except OSError as exc:
        error = exc
    else:
        if _DROP_CACHE:  # every page is clean now: a sealed log is read rarely
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    with contextlib.suppress(OSError):
        os.close(fd)
    try:
        finished(error)
    except Exception:  # a bug in the report: the log itself is closed
        log.exception("finishing a session log failed")


FINISHER: Final = LogFinisher()
"""The process's finisher (its threads start with the first sealed log)."""

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=FINISHER.after_fork)
