"""What every listener needs, passed explicitly (no global service locator)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sluice.config import Config, ConnectionSpec
from sluice.credentials.vault import Vault, resolve_credential
from sluice.errors import CredentialError
from sluice.proxy.cancel import CancelRegistry
from sluice.proxy.pool import BackendPool
from sluice.store.db import Store

if TYPE_CHECKING:
    from sluice.proxy.governance import Governor


@dataclass(slots=True)
class Gateway:
    config: Config
    store: Store
    vault: Vault
    client_tls: ssl.SSLContext
    governor: Governor
    cancels: CancelRegistry = field(default_factory=CancelRegistry)
    pools: dict[str, BackendPool] = field(default_factory=dict)

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
