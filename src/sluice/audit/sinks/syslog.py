"""Syslog sink: RFC 5424 messages over UDP (RFC 5426) or TCP with octet-counting
framing (RFC 6587 section 3.4.1), optionally TLS (RFC 5425).

Message layout::

    <PRI>1 TIMESTAMP HOSTNAME sluice PROCID MSGID [sluice@32473 k="v" ...] {json}

MSGID is the event type; the structured-data element repeats the key fields
for receivers that do not parse JSON; MSG is the event's JSON (no BOM).
Delivery runs in a worker thread with a bounded queue: UDP is best effort;
TCP reconnects with backoff and resends the frame it was sending, so a
receiver may see a duplicate after a reconnect (deduplicate by `id`).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import ssl
from pathlib import Path
from typing import Any, Final, Literal

from sluice.audit.events import AuditEvent, Outcome, to_dict
from sluice.audit.sinks.base import RateLimitedWarning, Worker
from sluice.audit.stamps import format_timestamp
from sluice.notify.http import Backoff

SD_ID: Final = "sluice@32473"
"""Structured-data id; 32473 is the private enterprise number reserved for
documentation (RFC 5612). Receivers match on the `sluice` prefix."""

_SEVERITY: Final = {
    Outcome.FAILURE: 3,  # error
    Outcome.DENIED: 4,  # warning
    Outcome.PENDING: 5,  # notice
    Outcome.SUCCESS: 6,  # informational
}


def _header_field(value: str, limit: int) -> str:
    cleaned = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return cleaned or "-"


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _sd_params(event: AuditEvent) -> str:
    params: list[tuple[str, str]] = [("id", event.id), ("outcome", str(event.outcome))]
    if event.identity is not None:
        params.append(("user", event.identity.user))
    for name in ("session_id", "connection", "rule", "client_addr"):
        value = getattr(event, name)
        if value:
            params.append((name, str(value)))
    body = " ".join(f'{k}="{_sd_escape(v)}"' for k, v in params)
    return f"[{SD_ID} {body}]"


def format_message(
    event: AuditEvent,
    line: str,
    *,
    facility: int,
    hostname: str,
    app_name: str,
    procid: str,
    max_bytes: int,
) -> bytes | None:
    """One RFC 5424 message; long statements are cut to fit `max_bytes`, None if
    even that does not fit."""
    pri = facility * 8 + _SEVERITY.get(event.outcome, 6)
    header = (
        f"<{pri}>1 {format_timestamp(event.timestamp)} {_header_field(hostname, 255)} "
        f"{_header_field(app_name, 48)} {_header_field(procid, 128)} "
        f"{_header_field(event.TYPE, 32)} {_sd_params(event)} "
    ).encode()
    msg = line.encode()
    if len(header) + len(msg) <= max_bytes:
        return header + msg
    data: dict[str, Any] = to_dict(event)
    statement = data.get("statement")
    if not isinstance(statement, str) or not statement:
        return None
    keep = len(statement)
    while keep > 0:
        keep //= 2
        data["statement"] = statement[:keep]
        data["statement_truncated"] = True
        msg = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        if len(header) + len(msg) <= max_bytes:
            return header + msg
    return None


def frame_octet_counting(message: bytes) -> bytes:
    """RFC 6587 octet-counting: `MSG-LEN SP SYSLOG-MSG`."""
    return str(len(message)).encode() + b" " + message


class SyslogSink:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        transport: Literal["udp", "tcp"] = "udp",
        tls: bool = False,
        ca_file: Path | None = None,
        facility: int = 13,
        app_name: str = "sluice",
        hostname: str | None = None,
        max_message_bytes: int = 8192,
        connect_timeout: float = 5.0,
        queue_size: int = 10_000,
    ) -> None:
        self.name = f"syslog:{transport}://{host}:{port}"
        self.host = host
        self.port = port
        self.transport = transport
        self._tls = ssl.create_default_context(cafile=ca_file) if tls else None
        self._facility = facility
        self._app_name = app_name
        self._hostname = hostname or socket.gethostname()
        self._procid = str(os.getpid())
        self._max_bytes = max_message_bytes
        self._timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._backoff = Backoff(initial=0.2, maximum=30.0)
        self._warn = RateLimitedWarning(self.name)
        self._worker: Worker[bytes] = Worker(self.name, queue_size, self._send)

    @property
    def dropped(self) -> int:
        return self._worker.dropped

    def emit(self, event: AuditEvent, line: str) -> None:
        message = format_message(
            event,
            line,
            facility=self._facility,
            hostname=self._hostname,
            app_name=self._app_name,
            procid=self._procid,
            max_bytes=self._max_bytes,
        )
        if message is None:
            self._warn("event %s larger than %d bytes, dropped", event.TYPE, self._max_bytes)
            return
        if not self._worker.submit(message):
            self._warn("queue full, event %s dropped", event.TYPE)

    # -- worker thread ----------------------------------------------------------

    def _connect(self) -> socket.socket:
        if self.transport == "udp":
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, addr = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.connect(addr)
            return sock
        sock = socket.create_connection((self.host, self.port), timeout=self._timeout)
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        sock.settimeout(self._timeout)
        return sock

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """A syslog receiver never sends: a readable socket means it closed (or reset)
        the connection. Checking before each send keeps a frame from being written
        into a connection the peer already closed, where it would be lost silently.
        poll, not select: a busy gateway's descriptors pass select's limit of 1024."""
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))

    def _close_socket(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _send(self, message: bytes) -> None:
        if self.transport == "udp":
            try:
                if self._sock is None:
                    self._sock = self._connect()
                self._sock.send(message)
            except OSError as exc:
                self._close_socket()
                self._warn("send failed, event dropped: %s", exc)
            return
        frame = frame_octet_counting(message)
        attempt = 0
        while True:
            try:
                if self._sock is not None and self._peer_closed(self._sock):
                    self._close_socket()
                if self._sock is None:
                    self._sock = self._connect()
                self._sock.sendall(frame)
                return
            except OSError as exc:
                self._close_socket()
                attempt += 1
                self._warn("send failed (attempt %d), retrying: %s", attempt, exc)
                if self._worker.wait(self._backoff.delay(attempt)):
                    self._worker.dropped += 1
                    return

    def close(self, deadline: float) -> None:
        abandoned = self._worker.close(deadline)
        if abandoned:
            self._warn("%d events not delivered before close", abandoned)
        self._close_socket()
