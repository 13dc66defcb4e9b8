"""A background thread per process that runs one kind of job in order."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Job = TypeVar("Job")


class JobThread(Generic[Job]):
    """Runs `run(job)` for each submitted job, in order, on one daemon thread
    started with the first job. A job that raises is logged; the next one runs."""

    def __init__(self, name: str, run: Callable[[Job], None]) -> None:
        self._name = name
        self._run = run
        self._jobs: queue.SimpleQueue[Job | threading.Event] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def after_fork(self) -> None:
        """A forked child has no thread and none of the parent's jobs."""
        self._jobs = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()

    def submit(self, job: Job) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                    thread.start()
                    self._thread = thread
        self._jobs.put(job)

    def drain(self, timeout: float) -> bool:
        """Wait until every job submitted so far is done; False on a timeout."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._jobs.put(done)
        return done.wait(timeout)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if isinstance(job, threading.Event):
                job.set()
                continue
            try:
                self._run(job)
            except Exception:  # never let the thread die: later jobs still run
                log.exception("%s: a job failed", self._name)
