"""What every audit sink provides, and the worker thread network sinks share."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Final, Generic, Protocol, TypeVar, cast

from sluice.audit.events import AuditEvent

log = logging.getLogger("sluice.audit")

WARN_INTERVAL_SECONDS: Final = 30.0
"""At most one warning per sink per interval while it keeps failing (no log floods)."""


class Sink(Protocol):
    name: str

    def emit(self, event: AuditEvent, line: str) -> None:
        """Take one event (`line` is its compact JSON). Only a required file sink raises."""

    def close(self, deadline: float) -> None:
        """Flush or deliver what is pending until `deadline` (time.monotonic)."""


class LineSink(Sink, Protocol):
    """A sink that needs only an event's type and line (file, stdout)."""

    def emit_line(self, event_type: str, data: bytes) -> None:
        """`emit` without the event object: `data` is the line in UTF-8, with its newline."""


class RateLimitedWarning:
    """Log a sink's repeated failures at most once per WARN_INTERVAL_SECONDS."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._last = -WARN_INTERVAL_SECONDS
        self.suppressed = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < WARN_INTERVAL_SECONDS:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} similar suppressed)" if self.suppressed else ""
        log.warning("audit sink %s: " + message + "%s", self.name, *args, more)
        self._last = now
        self.suppressed = 0


T = TypeVar("T")
_STOP: Final = object()


class Worker(Generic[T]):
    """A daemon thread delivering items from a bounded queue, in order.

    `deliver` does the I/O and its own retries; it should sleep with
    `self.wait(seconds)`, which returns True once the close deadline has passed
    (then it should give up on the item).
    """

    def __init__(self, name: str, size: int, deliver: Callable[[T], None]) -> None:
        self.name = name
        self._queue: queue.Queue[object] = queue.Queue(maxsize=size)
        self._deliver = deliver
        self._closing = threading.Event()
        self._deadline = float("inf")
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"audit-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Queue an item without blocking; False (and counted) if the queue is full."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def expired(self) -> bool:
        return self._closing.is_set() and time.monotonic() >= self._deadline

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds` (less when closing); True if the deadline has passed."""
        end = time.monotonic() + seconds
        while not self.expired():
            remaining = min(end, self._deadline) - time.monotonic()
            if remaining <= 0:
                break
            self._closing.wait(remaining)
            if self._closing.is_set():
                # closing: sleep in short steps until the retry time or the deadline
                time.sleep(min(0.05, max(remaining, 0)))
        return self.expired()

    def close(self, deadline: float) -> int:
        """Stop after delivering what is queued, or at `deadline`; returns items abandoned."""
        self._deadline = deadline
        self._closing.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=max(deadline - time.monotonic(), 0.001))
        self._thread.join(max(deadline - time.monotonic(), 0) + 0.5)
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self.expired():
                self.dropped += 1
                continue
            try:
                self._deliver(cast(T, item))
            except Exception:
                log.exception("audit sink %s: delivery failed", self.name)
