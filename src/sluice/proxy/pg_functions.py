"""The target database's own functions that cannot write, from its catalog.

A SELECT calling a function the policy does not know to be read-only is
judged as procedural code. Functions of extensions and of the database's
own schemas are often STABLE or IMMUTABLE (PostGIS, pgcrypto, reporting
helpers), and PostgreSQL refuses writes in those: the gateway reads which
ones they are, with its own credential, so calling them stays a read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from sluice.proxy.pg_masking import CATALOG_TTL_SECONDS, QueryRunner

FUNCTIONS_SQL = """
SELECT n.nspname, p.proname, pg_catalog.bool_and(p.provolatile <> 'v')
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
GROUP BY 1, 2
"""


def read_only_functions(rows: list[list[bytes | None]]) -> frozenset[str]:
    """Names (lower case) whose every function is not volatile: `schema.name`
    for the functions of one schema, `name` when so in every schema."""
    qualified: dict[str, bool] = {}
    bare: dict[str, bool] = {}
    for schema, name, not_volatile in rows:
        if schema is None or name is None:
            continue
        key = name.decode().lower()
        vetted = not_volatile == b"t"
        qualified_key = f"{schema.decode().lower()}.{key}"
        qualified[qualified_key] = qualified.get(qualified_key, True) and vetted
        bare[key] = bare.get(key, True) and vetted
    return frozenset(
        [name for name, vetted in qualified.items() if vetted]
        + [name for name, vetted in bare.items() if vetted]
    )


@dataclass(slots=True)
class _Snapshot:
    names: frozenset[str]
    loaded_at: float


@dataclass
class FunctionCatalog:
    """`read_only_functions` per connection, read again after CATALOG_TTL_SECONDS."""

    snapshots: dict[str, _Snapshot] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def get(self, connection: str, run: QueryRunner) -> frozenset[str]:
        lock = self.locks.setdefault(connection, asyncio.Lock())
        async with lock:
            snap = self.snapshots.get(connection)
            if snap is not None and time.monotonic() - snap.loaded_at < CATALOG_TTL_SECONDS:
                return snap.names
            (rows,) = await run(FUNCTIONS_SQL)
            snap = _Snapshot(read_only_functions(rows), time.monotonic())
            self.snapshots[connection] = snap
            return snap.names
