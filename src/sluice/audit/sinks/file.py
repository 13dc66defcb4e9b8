"""JSON-lines file sink: the default, and the one that can be required.

`emit` writes the line with os.write before returning (so "emit returned"
means the event is in the file, surviving a crash of Sluice). fsync policy:
`always` fsyncs before returning (survives power loss, costs a disk flush per
event); `interval` (default) fsyncs from a background thread at most
`fsync_interval_seconds` after a write; `never` leaves it to the OS. The file
is opened with O_APPEND, so lines from several processes do not interleave.
Rotation is left to external tools (copytruncate-style rotation works).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Literal

from sluice.audit.errors import AuditError
from sluice.audit.events import AuditEvent
from sluice.audit.sinks.base import RateLimitedWarning

FsyncPolicy = Literal["always", "interval", "never"]


class FileSink:
    def __init__(
        self,
        path: Path,
        *,
        required: bool = False,
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = 1.0,
    ) -> None:
        self.name = f"file:{path}"
        self.path = path
        self.required = required
        self._fsync = fsync
        self._interval = fsync_interval
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._dirty = False
        self._closed = threading.Event()  # wakes the fsync thread
        self._is_closed = False  # what `emit_line` reads, under the lock: no call per line
        self._warn = RateLimitedWarning(self.name)
        self._syncer: threading.Thread | None = None
        try:
            self._open()
        except OSError as exc:
            if required:
                raise AuditError(f"cannot open audit file {path}: {exc.strerror or exc}") from None
            self._warn("cannot open %s: %s", path, exc)
        if fsync == "interval":
            self._syncer = threading.Thread(
                target=self._sync_loop, name="audit-file-fsync", daemon=True
            )
            self._syncer.start()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o600)
        return self._fd

    def emit(self, event: AuditEvent, line: str) -> None:
        self.emit_line(event.TYPE, (line + "\n").encode())

    def emit_line(self, event_type: str, data: bytes) -> None:
        """`emit` for callers that have the line (UTF-8, with its newline) but no event object."""
        with self._lock:
            if self._is_closed:
                self._failed(event_type, "the audit log is closed")
                return
            try:
                fd = self._fd if self._fd is not None else self._open()
                written = os.write(fd, data)
                if written < len(data):  # a short write: the rest, however many it takes
                    view = memoryview(data)[written:]
                    while view:
                        view = view[os.write(fd, view) :]
                if self._fsync == "always":
                    os.fsync(fd)
                else:
                    self._dirty = True
            except OSError as exc:
                self._drop_fd()
                self._failed(event_type, str(exc.strerror or exc))

    def _failed(self, event_type: str, why: str) -> None:
        if self.required:
            raise AuditError(f"audit event {event_type} not written to {self.path}: {why}")
        self._warn("event %s lost: %s", event_type, why)

    def _drop_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _sync_loop(self) -> None:
        while not self._closed.wait(self._interval):
            self.sync()

    def sync(self) -> None:
        """fsync what was written so far, without holding up `emit`.

        A flush to disk can take tens of milliseconds; the lock is held only
        to take a duplicate of the descriptor, so the event loop's writes go
        on meanwhile (and the descriptor cannot be closed under the fsync).
        """
        with self._lock:
            if not self._dirty or self._fd is None:
                return
            try:
                fd = os.dup(self._fd)
            except OSError as exc:
                self._warn("fsync failed: %s", exc)
                return
            self._dirty = False
        try:
            os.fsync(fd)
        except OSError as exc:
            with self._lock:
                self._dirty = True
            self._warn("fsync failed: %s", exc)
        finally:
            os.close(fd)

    def close(self, deadline: float) -> None:
        if self._fsync != "never":
            self.sync()
        with self._lock:
            self._is_closed = True
            self._closed.set()
            self._drop_fd()
