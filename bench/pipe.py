"""A minimal TLS-terminating pipe for PostgreSQL: the floor under any Python gateway.

Reference peer for the benchmarks, not part of Sluice. It answers the
client's SSLRequest, terminates TLS with the given certificate, opens TLS to
the backend the same way Sluice does, and from then on copies bytes both
ways with one `asyncio.Protocol` per side on uvloop: no framing, no parsing,
no policy. Authentication (SCRAM) passes through to PostgreSQL; the pipe
presents PostgreSQL's own certificate, so SCRAM channel binding still holds.
What Sluice costs beyond this pipe is its own work.

    python -m bench.pipe --listen 6500 --backend 5432 --cert c.pem --key k.pem --ca ca.pem
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import struct

SSL_REQUEST = struct.pack("!II", 8, 80877103)
# A startup that does not finish within this is dropped.
HANDSHAKE_TIMEOUT = 10.0


class _Pipe(asyncio.Protocol):
    """One direction's receiver: what arrives is written to the other side."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def _handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    backend_port: int,
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
) -> None:
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            if await reader.readexactly(8) != SSL_REQUEST:
                writer.close()
                return
            writer.write(b"S")
            await writer.start_tls(server_ctx)
            backend_reader, backend_writer = await asyncio.open_connection(
                "127.0.0.1", backend_port
            )
            backend_writer.write(SSL_REQUEST)
            if await backend_reader.readexactly(1) != b"S":
                writer.close()
                backend_writer.close()
                return
            await backend_writer.start_tls(client_ctx, server_hostname="localhost")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
        writer.close()
        return
    client_side, backend_side = _Pipe(), _Pipe()
    client_side.transport = writer.transport  # type: ignore[assignment]
    backend_side.transport = backend_writer.transport  # type: ignore[assignment]
    client_side.peer, backend_side.peer = backend_side, client_side
    writer.transport.set_protocol(client_side)
    backend_writer.transport.set_protocol(backend_side)
    # Bytes that arrived while the streams were still in charge (the client's
    # startup message, sent right after its TLS handshake) go on as well.
    for pending, to in ((reader, backend_writer), (backend_reader, writer)):
        buffered = bytes(getattr(pending, "_buffer", b""))  # where StreamReader keeps them
        if buffered:
            to.transport.write(buffered)


async def _serve(args: argparse.Namespace) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(args.cert, args.key)
    server_ctx.num_tickets = 0
    client_ctx = ssl.create_default_context(cafile=args.ca)
    server = await asyncio.start_server(
        lambda r, w: _handle(
            r, w, backend_port=args.backend, server_ctx=server_ctx, client_ctx=client_ctx
        ),
        "127.0.0.1",
        args.listen,
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipe",
        description="Minimal TLS-terminating PostgreSQL pipe (a benchmark reference peer).",
    )
    parser.add_argument("--listen", type=int, required=True, help="port to listen on")
    parser.add_argument("--backend", type=int, required=True, help="PostgreSQL's port")
    parser.add_argument("--cert", required=True, help="certificate for clients")
    parser.add_argument("--key", required=True, help="its private key")
    parser.add_argument("--ca", required=True, help="CA file to verify PostgreSQL with")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
