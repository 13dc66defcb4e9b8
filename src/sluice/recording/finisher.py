"""Finish sealed session logs off the event loop: fsync, then close.

A session's last records are written on the event loop when it ends; the
fsync that makes the log durable can take a fraction of a millisecond for a
small log on an idle disk, and tens or hundreds of milliseconds for a large
log or on a busy or networked one. The loop serves every other session
meanwhile, so one session ending must not stall them all (the audit file
sink keeps its fsync off the loop for the same reason). Logs are finished
here, by one thread per process, in the order they were sealed.

A failed fsync is reported through the callback of its log (the writer's
failure hook: it is audited); `drain` waits for the logs handed over so far,
for a gateway stopping.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Final

from sluice.recording.jobs import JobThread

Finished = Callable[[OSError | None], None]
"""Called in the finisher's thread once a log is closed: None, or the fsync's error."""


class LogFinisher:
    """One daemon thread per process, started with the first log handed over."""

    def __init__(self) -> None:
        self._jobs: JobThread[tuple[int, Finished]] = JobThread("sluice-log-finish", _finish)

    @property
    def thread(self) -> threading.Thread | None:
        return self._jobs.thread

    def after_fork(self) -> None:
        """A forked child has no thread and none of the parent's logs."""
        self._jobs.after_fork()

    def submit(self, fd: int, finished: Finished) -> None:
        """fsync and close `fd` (the finisher owns it now), then call `finished`."""
        self._jobs.submit((fd, finished))

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every log handed over so far is finished; False on a timeout."""
        return self._jobs.drain(timeout)


def _finish(job: tuple[int, Finished]) -> None:
    fd, finished = job
    error: OSError | None = None
    try:
        os.fsync(fd)
    except OSError as exc:
        error = exc
    with contextlib.suppress(OSError):
        os.close(fd)
    finished(error)  # if it raises, the thread logs it and goes on


FINISHER: Final = LogFinisher()
"""The process's finisher (its thread starts with the first sealed log)."""

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=FINISHER.after_fork)
