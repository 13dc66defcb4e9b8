"""Running the gateway: build its services from config, serve until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from sluice._compiled import hot_path_mode
from sluice.config import Config, parse_host_port
from sluice.credentials.vault import Vault
from sluice.proxy.gateway import Gateway
from sluice.proxy.governance import Governor
from sluice.proxy.pg_listener import PostgresListener
from sluice.proxy.slots import SessionSlots
from sluice.recording.finisher import FINISHER
from sluice.store.db import Store
from sluice.tls import gateway_cert, server_context

log = logging.getLogger(__name__)


def build_gateway(
    config: Config,
    *,
    store: Store | None = None,
    governor: Governor | None = None,
    session_slots: SessionSlots | None = None,
) -> Gateway:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if store is None:
        store = Store(config.store_url)
        store.migrate()
    cert, key = gateway_cert(config.data_dir, config.tls.cert_file, config.tls.key_file)
    if governor is None:
        from sluice.proxy.governance_setup import build_services

        governor = Governor(build_services(config, store))
    return Gateway(
        config=config,
        store=store,
        vault=Vault.open(config.data_dir),
        client_tls=server_context(cert, key),
        governor=governor,
        session_slots=SessionSlots() if session_slots is None else session_slots,
    )


async def serve(
    gateway: Gateway,
    *,
    ready: Callable[[list[tuple[str, int]]], None] | None = None,
    stop: asyncio.Event | None = None,
    config_path: Path | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve until `stop` is set or SIGINT/SIGTERM arrives.

    With `config_path`, policies reload on SIGHUP and when the file changes.
    """
    from sluice.proxy.governance_setup import PolicyReloader

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    background: list[asyncio.Task[object]] = []
    reloader = PolicyReloader(gateway, config_path) if config_path is not None else None
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        if reloader is not None:
            loop.add_signal_handler(
                signal.SIGHUP, lambda: background.append(loop.create_task(reloader.reload()))
            )
    if reloader is not None:
        background.append(loop.create_task(reloader.watch()))
    listener = PostgresListener(gateway)
    host, port = parse_host_port(gateway.config.listen.postgres)
    server = await listener.start(host, port, reuse_port=reuse_port)
    bound = [sock.getsockname()[:2] for sock in server.sockets]
    log.info(
        "PostgreSQL listener on %s; hot path %s",
        ", ".join(f"{h}:{p}" for h, p in bound),
        hot_path_mode(),
    )
    if ready is not None:
        ready(bound)
    try:
        await stop.wait()
    finally:
        for task in background:
            task.cancel()
        server.close()
        await listener.close()
        await server.wait_closed()
        gateway.memory.close()
        # Session logs sealed on the way out are fsynced before audit closes:
        # a failed fsync is audited.
        await asyncio.to_thread(FINISHER.drain)
        services = gateway.governor.services
        if services is not None:
            await services.audit.aclose()
        await asyncio.to_thread(gateway.close)


def run(gateway: Gateway, *, config_path: Path | None = None, reuse_port: bool = False) -> None:
    """Run `serve` on uvloop."""
    import uvloop

    uvloop.run(serve(gateway, config_path=config_path, reuse_port=reuse_port))


def default_config_path() -> Path | None:
    path = Path("sluice.yaml")
    return path if path.exists() else None
