"""The gateway's SSL contexts: their TLS objects call OpenSSL's C methods
directly, and behave exactly as the standard library's over a real handshake,
in memory and through uvloop."""

from __future__ import annotations

import asyncio
import inspect
import os
import ssl
from pathlib import Path
from typing import cast

import pytest
import uvloop

from sluice.tls import DirectSSLObject, backend_context, generate_self_signed, server_context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "gateway.crt", directory / "gateway.key"
    generate_self_signed(cert, key)
    return cert, key


class _Pair:
    """A server and a client TLS object joined by memory BIOs, handshaken."""

    def __init__(self, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
        self.to_server, self.from_server = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.to_client, self.from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.server = server_ctx.wrap_bio(self.to_server, self.from_server, server_side=True)
        self.client = client_ctx.wrap_bio(self.to_client, self.from_client)
        for _ in range(10):
            done = [self._step(self.client), self._step(self.server)]
            self.pump()
            if all(done):
                return
        raise AssertionError("the handshake did not finish")

    @staticmethod
    def _step(side: ssl.SSLObject) -> bool:
        try:
            side.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def pump(self) -> None:
        if self.from_client.pending:
            self.to_server.write(self.from_client.read())
        if self.from_server.pending:
            self.to_client.write(self.from_server.read())


def test_the_gateways_tls_objects_call_the_c_methods_directly(
    certificate: tuple[Path, Path],
) -> None:
    pair = _Pair(server_context(*certificate), backend_context("require", None))
    for side in (pair.server, pair.client):
        assert isinstance(side, DirectSSLObject)
        for name in ("read", "write", "pending"):
            assert inspect.isbuiltin(getattr(side, name)), name
    # A context of the standard library's keeps its Python methods.
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    assert not inspect.isbuiltin(plain.read)


def test_direct_methods_read_write_and_report_as_the_standard_ones(
    certificate: tuple[Path, Path],
) -> None:
    pair = _Pair(server_context(*certificate), backend_context("require", None))
    with pytest.raises(ssl.SSLWantReadError):
        pair.server.read(1024)
    payload = os.urandom(40_000)  # more than one TLS record
    assert pair.client.write(payload) == len(payload)
    pair.pump()
    received = bytearray()
    while pair.to_server.pending > 0 or pair.server.pending() > 0:
        received += pair.server.read(16_384)
    assert received == payload
    # Into a caller's buffer, as uvloop's buffered protocols read.
    pair.server.write(b"row data")
    pair.pump()
    buffer = bytearray(64)
    count: object = pair.client.read(64, buffer)  # a count when reading into a buffer
    assert count == len(b"row data")
    assert bytes(buffer[:8]) == b"row data"
    # A close_notify reads as the end of the stream.
    with pytest.raises(ssl.SSLWantReadError):
        pair.client.unwrap()
    pair.pump()
    assert pair.server.read(1024) == b""


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is not a subclass of asyncio's classes.
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class _Collect(asyncio.Protocol):
    def __init__(self, want: int) -> None:
        self.received = bytearray()
        self.want = want
        self.done = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.want and not self.done.done():
            self.done.set_result(None)


def test_uvloop_carries_data_both_ways_through_the_direct_methods(
    certificate: tuple[Path, Path],
) -> None:
    payload = os.urandom(1 << 20)

    async def exchange() -> tuple[bytes, list[object]]:
        loop = asyncio.get_running_loop()
        echoes: list[_Echo] = []

        def echo() -> _Echo:
            echoes.append(_Echo())
            return echoes[-1]

        server = await loop.create_server(echo, "127.0.0.1", 0, ssl=server_context(*certificate))
        port = server.sockets[0].getsockname()[1]
        transport, client = await loop.create_connection(
            lambda: _Collect(len(payload)), "127.0.0.1", port, ssl=backend_context("require", None)
        )
        transport.write(payload)
        await client.done
        ssl_objects = [
            transport.get_extra_info("ssl_object"),
            echoes[0].transport.get_extra_info("ssl_object"),
        ]
        transport.close()
        server.close()
        await server.wait_closed()
        return bytes(client.received), ssl_objects

    received, ssl_objects = uvloop.run(asyncio.wait_for(exchange(), 30))
    assert received == payload
    for ssl_object in ssl_objects:
        assert isinstance(ssl_object, DirectSSLObject)
        assert inspect.isbuiltin(ssl_object.read)
