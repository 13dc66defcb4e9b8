"""A client's cancel reaches the backend over TLS, like the session it cancels.

A relay between the gateway and PostgreSQL notes how each connection to the
backend begins: with TLS on the connection, none may begin with a plaintext
CancelRequest (which would carry the backend's cancel key in the clear).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from sluice.protocols.postgres.messages import CANCEL_REQUEST_CODE, SSL_REQUEST_CODE
from tests.conftest import base_config
from tests.helpers import GatewayThread


class Relay:
    """Forwards TCP to `upstream`, keeping the first 8 bytes of each connection."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.openings: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream)) as server:
            opening = b""
            while len(opening) < 8:
                chunk = client.recv(8 - len(opening))
                if not chunk:
                    return
                opening += chunk
            self.openings.append(opening)
            server.sendall(opening)
            threading.Thread(target=_pump, args=(server, client), daemon=True).start()
            _pump(client, server)

    def close(self) -> None:
        self._server.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module")
def relay(pg: ThrowawayPostgres) -> Iterator[Relay]:
    relay = Relay(pg.port)
    yield relay
    relay.close()


@pytest.fixture(scope="module")
def gateway(
    pg: ThrowawayPostgres, relay: Relay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    config = base_config(pg, tmp_path_factory.mktemp("cancel-tls"))
    first, *rest = config.connections
    assert first.tls.mode == "verify-full"
    through_relay = first.model_copy(update={"port": relay.port})
    thread = GatewayThread(config.model_copy(update={"connections": (through_relay, *rest)}))
    thread.start()
    yield thread
    thread.stop()


def test_cancel_goes_to_the_backend_over_tls(gateway: GatewayThread, relay: Relay) -> None:
    token = gateway.token()
    with psycopg.connect(gateway.dsn(token), autocommit=True) as conn:
        seen = len(relay.openings)
        # cancel_safe: libpq polled from Python; the legacy blocking cancel would hold
        # the interpreter that also runs this in-process gateway.
        timer = threading.Timer(1.0, conn.cancel_safe)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        timer.join()
        assert time.monotonic() - started < 10
        assert conn.execute("SELECT 1").fetchone() == (1,)
    codes = [struct.unpack("!II", opening)[1] for opening in relay.openings]
    assert len(codes) > seen  # the cancel's own connection came through the relay
    assert CANCEL_REQUEST_CODE not in codes
    assert set(codes) == {SSL_REQUEST_CODE}


@pytest.mark.parametrize(("mode", "sent"), [("require", False), ("prefer", True)])
def test_a_backend_without_tls_gets_the_cancel_only_if_tls_is_optional(
    mode: str, sent: bool
) -> None:
    from sluice.config import ConnectionSpec
    from sluice.proxy.pg_listener import _cancel_tls

    async def run() -> tuple[bool, bytes]:
        received: list[bytes] = []

        async def no_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.readexactly(8))  # the SSLRequest
            writer.write(b"N")
            received.append(await reader.read())  # whatever follows, to EOF
            writer.close()

        server = await asyncio.start_server(no_tls, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = ConnectionSpec.model_validate(
            {
                "name": "db",
                "host": "127.0.0.1",
                "port": port,
                "database": "db",
                "user": "u",
                "tls": {"mode": mode},
            }
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ok = await _cancel_tls(reader, writer, conn)
        if ok:
            writer.write(b"cancel")
            await writer.drain()
        writer.close()
        await asyncio.sleep(0.1)
        server.close()
        return ok, b"".join(received[1:])

    ok, after = asyncio.run(run())
    assert ok is sent
    assert after == (b"cancel" if sent else b"")
