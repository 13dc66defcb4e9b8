"""What every listener needs, passed explicitly (no global service locator)."""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from sluice.config import Config, ConnectionSpec
from sluice.credentials.vault import Vault, resolve_credential
from sluice.errors import CredentialError
from sluice.proxy.cancel import CancelRegistry
from sluice.proxy.memory import MemoryTrimmer
from sluice.proxy.pool import BackendPool
from sluice.proxy.slots import SessionSlots
from sluice.store.db import Store

if TYPE_CHECKING:
    from sluice.proxy.governance import Governor

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(slots=True)
class Gateway:
    config: Config
    store: Store
    vault: Vault
    client_tls: ssl.SSLContext
    governor: Governor
    cancels: CancelRegistry = field(default_factory=CancelRegistry)
    pools: dict[str, BackendPool] = field(default_factory=dict)
    # Shared by the workers of `serve --workers N`: made before they fork.
    session_slots: SessionSlots = field(default_factory=SessionSlots)
    # Returns the heap's free memory to the OS after a burst of sessions ends.
    memory: MemoryTrimmer = field(default_factory=MemoryTrimmer)
    _store_threads: ThreadPoolExecutor | None = None

    async def in_store(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store call off the event loop, on the store's own threads.

        The store's threads are few (one for SQLite): a thread per waiting
        call would only contend for the store's lock and the interpreter.
        """
        if self._store_threads is None:
            self._store_threads = ThreadPoolExecutor(
                max_workers=self.store.writer_threads, thread_name_prefix="sluice-store"
            )
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._store_threads, call)

    def close(self) -> None:
        """Stop the store's threads once their calls are done."""
        if self._store_threads is not None:
            self._store_threads.shutdown(wait=True)
            self._store_threads = None

    def pool_for(self, conn: ConnectionSpec) -> BackendPool | None:
        if conn.pool.size <= 0:
            return None
        pool = self.pools.get(conn.name)
        if pool is None:
            pool = self.pools[conn.name] = BackendPool(
                size=conn.pool.size, max_idle_seconds=conn.pool.max_idle_seconds
            )
        return pool

    def backend_password(self, conn: ConnectionSpec) -> str | None:
        def load_stored(name: str) -> str:
            ciphertext = self.store.get_credential(name)
            if ciphertext is None:
                raise CredentialError(
                    f"connection {conn.name!r} uses stored credential {name!r}, which is not set",
                    hint=f"store it with `sluice credentials set {name}`",
                )
            return self.vault.decrypt(ciphertext)

        return resolve_credential(conn.password, load_stored=load_stored)
