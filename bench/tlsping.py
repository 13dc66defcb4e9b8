"""`python -m bench.tlsping`: TLS round trips on uvloop with the gateway's SSL contexts.

A client sends a 60-byte message and a server echoes it, `--n` times, both
ends with the contexts the gateway uses (`sluice.tls`): each round trip is two
TLS reads and two TLS writes, as a gateway's statement makes (the client's
read and write, the backend's write and read). `--standard` gives both
contexts the standard library's `ssl.SSLObject` instead, for comparison.
`python -m bench.instructions --tls` counts its instructions per round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import tempfile
import time
from pathlib import Path

import uvloop

from sluice.tls import backend_context, generate_self_signed, server_context

MESSAGE = b"x" * 60
"""About a pgbench statement's size."""


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


class _Ping(asyncio.Protocol):
    def __init__(self, round_trips: int) -> None:
        self.left = round_trips
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.left -= 1
        if self.left > 0:
            self.transport.write(MESSAGE)  # type: ignore[attr-defined]
        elif not self.done.done():
            self.done.set_result(None)


async def ping(round_trips: int, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> float:
    """Seconds for `round_trips` echoed messages over one TLS connection."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    transport, client = await loop.create_connection(
        lambda: _Ping(round_trips), "127.0.0.1", port, ssl=client_ctx
    )
    started = time.perf_counter()
    transport.write(MESSAGE)
    await client.done
    elapsed = time.perf_counter() - started
    transport.close()
    server.close()
    await server.wait_closed()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tlsping",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--n", type=int, default=10_000, help="round trips (default 10000)")
    parser.add_argument(
        "--standard",
        action="store_true",
        help="the standard library's ssl.SSLObject instead of the gateway's",
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    with tempfile.TemporaryDirectory(prefix="sluice-tlsping-") as tmp:
        cert, key = Path(tmp) / "ping.crt", Path(tmp) / "ping.key"
        generate_self_signed(cert, key)
        server_ctx = server_context(cert, key)
        # A context of its own: backend_context's are cached and shared.
        client_ctx = backend_context.__wrapped__("require", None)
        if args.standard:
            server_ctx.sslobject_class = client_ctx.sslobject_class = ssl.SSLObject
        elapsed = uvloop.run(ping(args.n, server_ctx, client_ctx))
    kind = "standard" if args.standard else "gateway"
    print(f"{kind} SSL objects: {elapsed / args.n * 1e6:.1f} µs per round trip ({args.n:,})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
