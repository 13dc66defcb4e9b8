"""A socket protocol for the handshake phase: await frames, then hand off.

During startup and authentication the gateway talks request/response with
each peer, which reads best as coroutines. `FrameReceiver` buffers what the
transport delivers and lets a coroutine await the next startup packet or
typed frame. Once the session is established, `detach()` returns the bytes
already buffered so the fast data-phase protocol can take over the transport
with `transport.set_protocol()`.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import cast

from sluice.protocols.postgres.framing import FrameBuffer, split_startup


class PeerClosed(ConnectionError):
    """The peer closed the connection (or it broke) while we waited for it."""


class FrameReceiver(asyncio.Protocol):
    def __init__(self, *, max_message: int):
        self.transport: asyncio.Transport | None = None
        self._frames = FrameBuffer(max_message=max_message)
        self._raw = bytearray()
        self._typed = False
        self._waiter: asyncio.Future[None] | None = None
        self._closed: Exception | None = None
        self.max_message = max_message

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._typed:
            self._frames.feed(data)
        else:
            self._raw += data
        self._wake()

    def eof_received(self) -> bool | None:
        self._closed = PeerClosed("the peer closed the connection")
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = PeerClosed(f"connection lost: {exc}" if exc else "connection closed")
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        if self._closed is not None:
            raise self._closed
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # Coroutine API

    async def read_startup(self) -> bytes:
        """The next untyped startup-phase packet's body."""
        while True:
            found = split_startup(self._raw, max_message=self.max_message)
            if found is not None:
                body, consumed = found
                del self._raw[:consumed]
                return body
            await self._wait()

    def begin_typed(self) -> None:
        """Switch from untyped startup packets to typed frames."""
        self._typed = True
        if self._raw:
            self._frames.feed(bytes(self._raw))
            self._raw.clear()

    async def read_frame(self) -> tuple[int, bytes]:
        while True:
            for item in self._frames.frames():
                return item
            await self._wait()

    @property
    def has_buffered(self) -> bool:
        return bool(self._raw) or self._frames.pending > 0

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise PeerClosed("cannot write: the connection is closed")
        self.transport.write(data)

    async def read_exact_byte(self) -> bytes:
        """One raw byte (the server's answer to SSLRequest)."""
        while not self._raw:
            await self._wait()
        byte = bytes(self._raw[:1])
        del self._raw[:1]
        return byte

    async def start_tls(
        self,
        ctx: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        handshake_timeout: float = 30.0,
    ) -> None:
        """Upgrade the connection to TLS; nothing may be buffered (no injection)."""
        if self.has_buffered:
            raise PeerClosed("unencrypted data was sent before the TLS handshake")
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        new_transport = await loop.start_tls(
            self.transport,
            self,
            ctx,
            server_side=server_side,
            server_hostname=server_hostname,
            ssl_handshake_timeout=handshake_timeout,
        )
        assert new_transport is not None
        self.transport = new_transport

    def detach(self) -> bytes:
        """Stop receiving; return bytes buffered but not yet consumed."""
        leftover = bytes(self._raw) + self._frames.take_raw()
        self._raw.clear()
        return leftover

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    @property
    def peer_ssl(self) -> bool:
        return (
            self.transport is not None and self.transport.get_extra_info("sslcontext") is not None
        )
