"""Stdout sink: one JSON line per event, written by a worker thread.

A slow reader of our stdout (a full pipe) stalls only the worker; past the
queue size, events for this sink are dropped and counted.
"""

from __future__ import annotations

import sys
from typing import TextIO

from sluice.audit.events import AuditEvent
from sluice.audit.sinks.base import RateLimitedWarning, Worker


class StdoutSink:
    def __init__(self, *, queue_size: int, stream: TextIO | None = None) -> None:
        self.name = "stdout"
        self._stream = stream
        self._warn = RateLimitedWarning(self.name)
        self._worker: Worker[str] = Worker(self.name, queue_size, self._write)

    def _write(self, line: str) -> None:
        stream = self._stream or sys.stdout
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:
            self._warn("write failed: %s", exc)

    def emit(self, event: AuditEvent, line: str) -> None:
        self._submit(event.TYPE, line)

    def emit_line(self, event_type: str, data: bytes) -> None:
        """`emit` for callers that have the line (UTF-8, with its newline) but no event object."""
        self._submit(event_type, data[:-1].decode())

    def _submit(self, event_type: str, line: str) -> None:
        if not self._worker.submit(line):
            self._warn("queue full, event %s dropped", event_type)

    @property
    def dropped(self) -> int:
        return self._worker.dropped

    def close(self, deadline: float) -> None:
        self._worker.close(deadline)
