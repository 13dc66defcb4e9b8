"""Maps the cancel keys the gateway hands clients to the backends' keys.

Clients never see a backend's process id or secret: the gateway gives each
session its own random key, and a CancelRequest carrying it is forwarded to
the right backend with the backend's key.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sluice.config import ConnectionSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelTarget:
    connection: ConnectionSpec
    process_id: int
    secret_key: int
    session_id: str


class CancelRegistry:
    def __init__(self) -> None:
        self._targets: dict[tuple[int, int], CancelTarget] = {}

    def register(self, target: CancelTarget) -> tuple[int, int]:
        while True:
            key = (secrets.randbelow(2**31 - 1) + 1, secrets.randbits(31))
            if key not in self._targets:
                self._targets[key] = target
                return key

    def lookup(self, process_id: int, secret_key: int) -> CancelTarget | None:
        return self._targets.get((process_id, secret_key))

    def unregister(self, key: tuple[int, int]) -> None:
        self._targets.pop(key, None)

    def __len__(self) -> int:
        return len(self._targets)
