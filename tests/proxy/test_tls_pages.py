"""An idle TLS connection hands back the pages of its read buffer: the pages
leave memory, and the connection goes on carrying the same bytes."""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import ssl
import time
from pathlib import Path

import psycopg
import pytest
import uvloop

from sluice.devservers.postgres import ThrowawayPostgres
from sluice.proxy import tls_pages
from sluice.tls import generate_self_signed, server_context
from tests.conftest import base_config
from tests.helpers import GatewayThread

pytestmark = pytest.mark.skipif(
    tls_pages._MADVISE is None, reason="no madvise (not Linux, or no C library call)"
)

PAGE = tls_pages.PAGE_SIZE


def _resident_pages(view: memoryview) -> tuple[int, int]:
    """(resident, all) whole pages of `view`, from mincore(2)."""
    mincore = ctypes.CDLL(None, use_errno=True).mincore
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    start, end = tls_pages.whole_pages(view)
    pages = (end - start) // PAGE
    vector = ctypes.create_string_buffer(pages)
    assert mincore(ctypes.c_void_p(start), ctypes.c_size_t(end - start), vector) == 0
    return sum(byte & 1 for byte in vector.raw), pages


class _Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.transport: asyncio.BaseTransport | None = None
        self.want = 0
        self.done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)
        if self.done is not None and self.size >= self.want and not self.done.done():
            self.done.set_result(None)

    async def until(self, size: int) -> None:
        self.want = size
        self.done = asyncio.get_running_loop().create_future()
        if self.size < size:
            await asyncio.wait_for(self.done, 30)


def _payload(seed: bytes, size: int) -> bytes:
    block = hashlib.sha512(seed).digest()
    return (block * (size // len(block) + 1))[:size]


def test_an_idle_connections_read_buffer_leaves_memory_and_keeps_working(
    tmp_path: Path,
) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    generate_self_signed(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False

    async def scenario() -> None:
        received = _Collect()
        server = await asyncio.get_running_loop().create_server(
            lambda: received, "127.0.0.1", 0, ssl=server_context(cert, key)
        )
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        first, second = _payload(b"first", 4_000_000), _payload(b"second", 3_000_000)
        writer.write(first)
        await writer.drain()
        await received.until(len(first))
        transport = received.transport
        assert transport is not None
        buffer = tls_pages._read_buffer(transport)
        assert buffer is not None
        assert buffer.nbytes >= 64 * 1024
        resident, pages = _resident_pages(buffer)
        assert resident > pages // 2  # large reads touched most of it

        released = tls_pages.release_read_buffer(transport)
        assert released == pages * PAGE
        assert _resident_pages(buffer)[0] == 0

        writer.write(second)  # the buffer serves the next reads as before
        await writer.drain()
        await received.until(len(first) + len(second))
        assert received.size == len(first) + len(second)
        assert received.digest.hexdigest() == hashlib.sha256(first + second).hexdigest()
        writer.close()
        server.close()
        await server.wait_closed()

    uvloop.run(scenario())


def test_plain_connections_and_the_stdlib_loop_have_nothing_to_release(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    generate_self_signed(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False

    async def released_by_server(tls: bool) -> int:
        received = _Collect()
        server = await asyncio.get_running_loop().create_server(
            lambda: received, "127.0.0.1", 0, ssl=server_context(cert, key) if tls else None
        )
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx if tls else None
        )
        writer.write(b"x" * 100_000)
        await writer.drain()
        await received.until(100_000)
        assert received.transport is not None
        released = tls_pages.release_read_buffer(received.transport)
        writer.close()
        server.close()
        await server.wait_closed()
        return released

    assert uvloop.run(released_by_server(tls=False)) == 0
    assert asyncio.run(released_by_server(tls=True)) == 0  # the stdlib's TLS transport


def test_a_session_idle_after_a_large_result_hands_back_its_buffers(
    pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    """Through the gateway, TLS on both legs: a large result, then idle. The
    release is counted once, the heap trimmed, and the next large result is
    the same as the first."""
    config = base_config(
        pg, tmp_path / "gw", limits={"auth_timeout": 5, "idle_release_seconds": 0.3}
    )
    thread = GatewayThread(config).start()
    try:
        assert thread.gateway is not None
        memory = thread.gateway.memory
        query = "SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 20000) g"
        with psycopg.connect(thread.dsn(thread.token())) as conn:
            first = conn.execute(query).fetchall()
            assert len(first) == 20000
            deadline = time.monotonic() + 10
            while memory.idle_releases == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert memory.idle_releases == 1
            # Both legs: up to 256 KiB each, less the partial pages at the ends.
            assert memory.released_bytes > 256 * 1024
            trims = memory.trims
            deadline = time.monotonic() + 10
            while memory.trims == trims and time.monotonic() < deadline:
                time.sleep(0.05)
            assert memory.trims == trims + 1
            assert conn.execute(query).fetchall() == first
            # A large result arms the release again; small statements do not.
            deadline = time.monotonic() + 10
            while memory.idle_releases == 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert memory.idle_releases == 2
            for _ in range(20):
                assert conn.execute("SELECT 1").fetchone() == (1,)
            time.sleep(1.0)  # past two release periods
            assert memory.idle_releases == 2
    finally:
        thread.stop()


def test_a_pooled_backend_parks_without_its_read_buffer_pages(
    pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    """A backend session handed to the pool after a large result is idle
    until the next client takes it: its read buffer's pages go at once."""
    config = base_config(pg, tmp_path / "gw")
    raw = config.model_dump(mode="json")
    raw["connections"][0]["pool"] = {"size": 1}
    thread = GatewayThread(type(config).model_validate(raw)).start()
    try:
        assert thread.gateway is not None
        query = "SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 20000) g"
        with psycopg.connect(thread.dsn(thread.token())) as conn:
            assert len(conn.execute(query).fetchall()) == 20000
        deadline = time.monotonic() + 10
        while not thread.gateway.pools["app"].idle and time.monotonic() < deadline:
            time.sleep(0.02)
        parked = thread.gateway.pools["app"].idle[0].transport
        buffer = thread.call(lambda: tls_pages._read_buffer(parked))
        assert buffer is not None
        assert _resident_pages(buffer)[0] == 0
        with psycopg.connect(thread.dsn(thread.token())) as conn:  # and it serves again
            assert len(conn.execute(query).fetchall()) == 20000
        assert thread.gateway.pools["app"].reuses == 1
    finally:
        thread.stop()
