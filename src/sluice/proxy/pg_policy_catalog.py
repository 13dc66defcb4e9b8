"""What the policy needs to know of the target database, from its catalog.

- Its own functions that cannot write. A SELECT calling a function the
  policy does not know to be read-only is judged as procedural code.
  Functions of extensions and of the database's own schemas are often
  STABLE or IMMUTABLE (PostGIS, pgcrypto, reporting helpers), and PostgreSQL
  refuses writes in those, so calling them stays a read.
- The schemas unqualified names resolve to by default. The policy takes
  them to be `public`; a role or database default search_path, or a schema
  named after the gateway's user (`"$user"`), makes that untrue.

Read with the gateway's own credential as sessions start, and kept a
while (`CatalogCache`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.proxy.pg_masking import QueryRunner

FUNCTIONS_SQL = """
SELECT n.nspname, p.proname, pg_catalog.bool_and(p.provolatile <> 'v')
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
GROUP BY 1, 2;
SELECT pg_catalog.array_to_string(pg_catalog.current_schemas(false), ',')
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


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    read_only_functions: frozenset[str]
    default_schemas: tuple[str, ...]
    """Where unqualified names resolve in a new session, in order."""

    @property
    def default_search_path_is_public(self) -> bool:
        return self.default_schemas == ("public",)


async def load_policy_facts(run: QueryRunner) -> PolicyFacts:
    functions, path = await run(FUNCTIONS_SQL)
    schemas = (path[0][0] or b"").decode() if path else ""
    return PolicyFacts(
        read_only_functions=read_only_functions(functions),
        default_schemas=tuple(s for s in schemas.split(",") if s),
    )
