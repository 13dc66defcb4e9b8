"""The audit trail: one `emit` fans an event out to every configured sink."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sluice.audit.errors import AuditError
from sluice.audit.events import AuditEvent, to_json
from sluice.audit.lines import EventLines
from sluice.audit.sinks.base import LineSink, Sink
from sluice.audit.sinks.file import FileSink
from sluice.audit.sinks.stdout import StdoutSink
from sluice.audit.sinks.syslog import SyslogSink
from sluice.audit.sinks.webhook import WebhookSink
from sluice.audit.spec import (
    AuditSpec,
    FileSinkSpec,
    SinkSpec,
    StdoutSinkSpec,
    SyslogSinkSpec,
)
from sluice.errors import ConfigError
from sluice.notify.http import Backoff

_Line = TypeVar("_Line", str, bytes)  # an event's line: text, or UTF-8 with its newline

log = logging.getLogger("sluice.audit")


def _resolve(path: Path, base_dir: Path | None) -> Path:
    return path if base_dir is None or path.is_absolute() else base_dir / path


def build_sink(spec: SinkSpec, *, base_dir: Path | None = None) -> Sink:
    """Create one sink from its configuration."""
    if isinstance(spec, FileSinkSpec):
        return FileSink(
            _resolve(spec.path, base_dir),
            required=spec.required,
            fsync=spec.fsync,
            fsync_interval=spec.fsync_interval_seconds,
        )
    if isinstance(spec, StdoutSinkSpec):
        return StdoutSink(queue_size=spec.queue_size)
    if isinstance(spec, SyslogSinkSpec):
        return SyslogSink(
            host=spec.host,
            port=spec.port,
            transport=spec.transport,
            tls=spec.tls,
            ca_file=spec.ca_file,
            facility=spec.facility,
            app_name=spec.app_name,
            hostname=spec.hostname,
            max_message_bytes=spec.max_message_bytes,
            connect_timeout=spec.connect_timeout_seconds,
            queue_size=spec.queue_size,
        )
    headers = dict(spec.headers)
    if spec.bearer_token_env is not None:
        token = os.environ.get(spec.bearer_token_env)
        if not token:
            raise ConfigError(
                f"audit webhook: environment variable {spec.bearer_token_env} is not set"
            )
        headers["Authorization"] = f"Bearer {token}"
    return WebhookSink(
        url=str(spec.url),
        spool_dir=_resolve(spec.spool_dir, base_dir),
        headers=headers,
        timeout=spec.timeout_seconds,
        backoff=Backoff(initial=spec.backoff_initial_seconds, maximum=spec.backoff_max_seconds),
        fsync=spec.fsync,
        max_spool_events=spec.max_spool_events,
    )


class AuditLog:
    """Fan-out of audit events. Thread-safe; `emit` may be called from the event loop.

    `emit` returns after the file sinks have written the event and the webhook
    sinks have spooled it; syslog and stdout deliver from worker threads. It
    raises only AuditError, and only for a file sink configured `required`.
    """

    def __init__(self, sinks: Sequence[Sink], *, close_timeout: float = 5.0) -> None:
        self.sinks = tuple(sinks)
        self.close_timeout = close_timeout
        self._required = any(isinstance(s, FileSink) and s.required for s in self.sinks)
        self._line_sinks: tuple[LineSink, ...] = tuple(
            s for s in self.sinks if isinstance(s, FileSink | StdoutSink)
        )
        self._object_sinks = len(self._line_sinks) != len(self.sinks)
        self._closed = False
        self._close_lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: AuditSpec, *, base_dir: Path | None = None) -> AuditLog:
        sinks: list[Sink] = []
        try:
            for sink_spec in spec.sinks:
                sinks.append(build_sink(sink_spec, base_dir=base_dir))
        except BaseException:
            deadline = time.monotonic()
            for sink in sinks:
                sink.close(deadline)
            raise
        return cls(sinks, close_timeout=spec.close_timeout_seconds)

    def emit_lines(self, lines: EventLines, values: dict[str, Any]) -> None:
        """`emit(lines.event(values))`, without building the event object when
        every sink takes lines (file and stdout sinks: the default)."""
        if self._object_sinks or self._closed:
            self.emit(lines.event(values))
            return
        data = self._serialised(lines.TYPE, lines.line, values)
        if data is None:
            return
        for sink in self._line_sinks:
            try:
                sink.emit_line(lines.TYPE, data)
            except AuditError:
                raise
            except Exception:
                log.exception("audit sink %s failed", sink.name)

    def emit(self, event: AuditEvent) -> None:
        if self._closed:
            if self._required:
                raise AuditError(f"audit event {event.TYPE} emitted after close")
            log.error("audit event %s %s emitted after close, lost", event.TYPE, event.id)
            return
        line = self._serialised(event.TYPE, to_json, event)
        if line is None:
            return
        for sink in self.sinks:
            try:
                sink.emit(event, line)
            except AuditError:
                raise
            except Exception:
                log.exception("audit sink %s failed", sink.name)

    def _serialised(
        self, event_type: str, encode: Callable[[Any], _Line], event: Any
    ) -> _Line | None:
        """`encode(event)`, or None (logged) if it cannot be serialised; with a
        required file sink that raises AuditError instead (fail closed)."""
        try:
            return encode(event)
        except (TypeError, ValueError) as exc:
            if self._required:
                raise AuditError(f"audit event {event_type} cannot be serialised: {exc}") from exc
            log.exception("audit event %s cannot be serialised", event_type)
            return None

    def close(self, timeout: float | None = None) -> None:
        """Flush files and give network sinks up to `timeout` seconds to deliver."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        threads = [
            threading.Thread(target=self._close_one, args=(sink, deadline), daemon=True)
            for sink in self.sinks
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    @staticmethod
    def _close_one(sink: Sink, deadline: float) -> None:
        try:
            sink.close(deadline)
        except Exception:
            log.exception("audit sink %s failed to close", sink.name)

    async def aclose(self, wait_seconds: float | None = None) -> None:
        """`close` without blocking the event loop."""
        await asyncio.to_thread(self.close, wait_seconds)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
