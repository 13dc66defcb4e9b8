"""Opt-in backend session pooling per connection.

A new client session usually costs the gateway a TCP connection, a TLS
handshake and a SCRAM exchange with the backend. With `pool: {size: N}` on a
connection, a backend session whose client ended cleanly (outside any
transaction) is reset with the server's own `DISCARD ALL` and kept for the
next client: no session state (settings, prepared statements, temporary
tables, LISTEN, advisory locks, session authorization) crosses from one
client to the next, and every pooled session authenticates as the
connection's own backend user, whoever the client is. A session that ended
inside a transaction, in COPY, or with an error is closed, never pooled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.framing import FrameBuffer
from sluice.protocols.postgres.messages import BackendKeyData
from sluice.proxy.tls_pages import release_read_buffer

log = logging.getLogger(__name__)

# The reset a pooled session gets before another client may use it.
RESET_SQL = "DISCARD ALL"
# How long a reset may take before the session is closed instead.
RESET_TIMEOUT_SECONDS = 5.0
# The largest reply the pool reads while resetting (a few short messages).
MAX_RESET_REPLY = 64 * 1024


class _Idle(asyncio.Protocol):
    """Protocol of a backend session while it sits in the pool.

    Whatever the backend says now (a shutdown notice, a broken socket) makes
    the session unusable.
    """

    def __init__(self) -> None:
        self.alive = True

    def data_received(self, data: bytes) -> None:
        self.alive = False

    def eof_received(self) -> bool | None:
        self.alive = False
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False


class _Resetting(asyncio.Protocol):
    """Reads the reply to DISCARD ALL up to ReadyForQuery."""

    def __init__(self, done: asyncio.Future[str]):
        self._frames = FrameBuffer(max_message=MAX_RESET_REPLY)
        self._done = done
        self.parameters: dict[str, str] = {}

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return
        try:
            self._frames.feed(data)
            for kind, body in self._frames.frames():
                if kind == m.ERROR_RESPONSE:
                    self._done.set_result("error")
                    return
                if kind == m.PARAMETER_STATUS:
                    name, value = m.decode_parameter_status(body)
                    self.parameters[name] = value
                if kind == m.READY_FOR_QUERY:
                    self._done.set_result(body.decode("ascii", "replace"))
                    return
        except Exception:
            self._done.set_result("error")

    def eof_received(self) -> bool | None:
        if not self._done.done():
            self._done.set_result("closed")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result("closed")


@dataclass(slots=True)
class PooledBackend:
    """An authenticated backend session, reset and ready for a new client."""

    transport: asyncio.Transport
    parameters: dict[str, str]
    key: BackendKeyData | None
    idle: _Idle = field(default_factory=_Idle)
    since: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class BackendPool:
    """Idle backend sessions of one connection."""

    size: int
    max_idle_seconds: float
    idle: deque[PooledBackend] = field(default_factory=deque)
    resets: int = 0
    reuses: int = 0

    def take(self) -> PooledBackend | None:
        """A live idle session, or None (the caller connects a new one)."""
        now = time.monotonic()
        while self.idle:
            pooled = self.idle.pop()
            if (
                pooled.idle.alive
                and not pooled.transport.is_closing()
                and now - pooled.since < self.max_idle_seconds
            ):
                self.reuses += 1
                return pooled
            pooled.transport.close()
        return None

    async def give_back(
        self, transport: asyncio.Transport, parameters: dict[str, str], key: BackendKeyData | None
    ) -> None:
        """Reset a session whose client ended cleanly and keep it, or close it."""
        if len(self.idle) >= self.size or transport.is_closing():
            _terminate(transport)
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()
        resetting = _Resetting(done)
        transport.set_protocol(resetting)
        transport.resume_reading()
        transport.write(m.encode_query(RESET_SQL))
        try:
            status = await asyncio.wait_for(done, RESET_TIMEOUT_SECONDS)
        except TimeoutError:
            status = "timeout"
        if status != "I":
            log.info("a backend session could not be reset (%s); closing it", status)
            _terminate(transport)
            return
        # DISCARD ALL reports the settings it put back to their defaults.
        pooled = PooledBackend(
            transport=transport, parameters={**parameters, **resetting.parameters}, key=key
        )
        transport.set_protocol(pooled.idle)
        release_read_buffer(transport)  # idle until taken: its read buffer's pages go back
        self.resets += 1
        self.idle.append(pooled)

    def close(self) -> None:
        while self.idle:
            _terminate(self.idle.pop().transport)


def _terminate(transport: asyncio.Transport) -> None:
    if not transport.is_closing():
        transport.write(m.TERMINATE_MESSAGE)
        transport.close()
