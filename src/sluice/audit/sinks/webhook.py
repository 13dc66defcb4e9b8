"""HTTP webhook sink with an on-disk spool: nothing is lost while the receiver
is down, and nothing is lost across a restart.

`emit` writes the event to `<spool_dir>/<ns>-<n>.json` (temp file + rename,
so a crash never leaves half an event) before returning; a worker thread
POSTs spooled events one at a time, oldest first, and deletes each file
after a 2xx. Other answers are retried with exponential backoff, forever,
except 400/413/422 (the receiver says this event will never be accepted):
those files move to `<spool_dir>/dead/` and are logged. On start the spool is
drained first. Delivery is at-least-once: a crash between the receiver's
2xx and the delete redelivers that event; receivers deduplicate by `id`.
One process owns a spool directory at a time (an flock on `.lock`).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from sluice.audit.errors import AuditError
from sluice.audit.events import AuditEvent
from sluice.audit.sinks.base import RateLimitedWarning, log
from sluice.notify.http import Backoff, HttpResult, check_url, post_json

PERMANENT_STATUSES: Final = frozenset({400, 413, 422})
"""Answers that mean "this event will never be accepted": dead-lettered, not retried."""

SPOOL_SUFFIX: Final = ".json"
DEAD_DIR: Final = "dead"


class WebhookSink:
    def __init__(
        self,
        *,
        url: str,
        spool_dir: Path,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        backoff: Backoff | None = None,
        fsync: bool = False,
        max_spool_events: int = 1_000_000,
    ) -> None:
        check_url(url)
        self.name = f"webhook:{url}"
        self.url = url
        self.spool_dir = spool_dir
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._backoff = backoff or Backoff()
        self._fsync = fsync
        self._max = max_spool_events
        self._warn = RateLimitedWarning(self.name)
        self._counter = 0
        self._pending: deque[str] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = float("inf")
        self.delivered = 0
        self.dead_lettered = 0
        self.dropped = 0
        try:
            spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_fd = os.open(
                spool_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise AuditError(f"cannot use audit spool {spool_dir}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise AuditError(f"audit spool {spool_dir} is in use by another process") from None
        self._recover()
        self._thread = threading.Thread(target=self._run, name="audit-webhook", daemon=True)
        self._thread.start()

    def _recover(self) -> None:
        """Queue what an earlier run left in the spool; drop half-written temp files."""
        names = []
        for entry in os.scandir(self.spool_dir):
            if entry.name.endswith(".tmp"):
                os.unlink(entry.path)
            elif entry.name.endswith(SPOOL_SUFFIX) and entry.is_file():
                names.append(entry.name)
        names.sort()
        self._pending.extend(names)
        if names:
            log.info("audit sink %s: %d spooled events to deliver", self.name, len(names))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def emit(self, event: AuditEvent, line: str) -> None:
        with self._cond:
            if len(self._pending) >= self._max:
                self.dropped += 1
                log.error(
                    "audit sink %s: spool full (%d events), event %s %s dropped",
                    self.name,
                    self._max,
                    event.TYPE,
                    event.id,
                )
                return
            self._counter += 1
            name = f"{time.time_ns():020d}-{self._counter:09d}{SPOOL_SUFFIX}"
            try:
                self._spool(name, line.encode())
            except OSError as exc:
                self.dropped += 1
                log.error("audit sink %s: cannot spool event %s: %s", self.name, event.id, exc)
                return
            self._pending.append(name)
            self._cond.notify()

    def _spool(self, name: str, data: bytes) -> None:
        tmp = self.spool_dir / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.spool_dir / name)

    # -- worker thread ----------------------------------------------------------

    def _expired(self) -> bool:
        return self._closing and time.monotonic() >= self._deadline

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending or self._expired():
                    return
                name = self._pending[0]
            path = self.spool_dir / name
            try:
                body = path.read_bytes()
            except FileNotFoundError:
                self._pop(name)
                continue
            except OSError as exc:
                body = None
                result = HttpResult(status=None, error=f"cannot read spool: {exc}")
            if body is not None:
                result = post_json(self.url, body, headers=self._headers, timeout=self._timeout)
            if result.ok:
                self._remove(path)
                self._pop(name)
                self.delivered += 1
                attempt = 0
            elif result.status in PERMANENT_STATUSES:
                self._dead_letter(path, result)
                self._pop(name)
                attempt = 0
            else:
                attempt += 1
                self._warn("delivery failed (attempt %d), will retry: %s", attempt, result.error)
                if self._sleep(self._backoff.delay(attempt)):
                    return

    def _sleep(self, seconds: float) -> bool:
        """Back off; True when the close deadline has passed."""
        end = time.monotonic() + seconds
        with self._cond:
            while True:
                if self._expired():
                    return True
                now = time.monotonic()
                wake = min(end, self._deadline)
                if now >= wake:
                    return self._expired()
                self._cond.wait(wake - now)

    def _pop(self, name: str) -> None:
        with self._cond:
            if self._pending and self._pending[0] == name:
                self._pending.popleft()

    def _remove(self, path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # it will be delivered again on restart (at-least-once)
            self._warn("cannot remove delivered %s: %s", path.name, exc)

    def _dead_letter(self, path: Path, result: HttpResult) -> None:
        self.dead_lettered += 1
        log.error(
            "audit sink %s: receiver rejected %s for good (%s); moved to %s/",
            self.name,
            path.name,
            result.error,
            DEAD_DIR,
        )
        try:
            (self.spool_dir / DEAD_DIR).mkdir(mode=0o700, exist_ok=True)
            os.rename(path, self.spool_dir / DEAD_DIR / path.name)
        except OSError as exc:
            self._warn("cannot move %s to %s/: %s", path.name, DEAD_DIR, exc)

    def close(self, deadline: float) -> None:
        """Deliver what is spooled until `deadline`; the rest stays for the next start."""
        with self._cond:
            self._closing = True
            self._deadline = deadline
            self._cond.notify_all()
        self._thread.join(max(deadline - time.monotonic(), 0) + self._timeout + 0.5)
        if self._pending:
            log.warning(
                "audit sink %s: %d events left in %s for the next start",
                self.name,
                len(self._pending),
                self.spool_dir,
            )
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
        except OSError:
            pass
