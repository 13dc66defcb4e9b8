"""What the policy needs to know of the target database, from its catalog.

- Its own functions that cannot write. A SELECT calling a function the
  policy does not know to be read-only is judged as procedural code.
  Functions of extensions and of the database's own schemas are often
  STABLE or IMMUTABLE (PostGIS, pgcrypto, reporting helpers), and PostgreSQL
  refuses writes in those, so calling them stays a read.
- What statements run without naming it (`sluice.policy.database`):
  volatile namesakes of built-in functions and operators, and the volatile
  functions that views and row-level security policies call.
- The schemas unqualified names resolve to by default. The policy takes
  them to be `public`; a role or database default search_path, or a schema
  named after the gateway's user (`"$user"`), makes that untrue.

Read with the gateway's own credential as sessions start, and kept a
while (`CatalogCache`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from sluice.policy.database import DatabaseCode
from sluice.policy.sql import builtin_read_functions
from sluice.proxy.pg_masking import QueryRunner

CATALOG_SQL = """
SELECT n.nspname, p.proname, pg_catalog.bool_and(p.provolatile <> 'v'),
    pg_catalog.bool_or(p.provolatile = 'v' AND NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_proc b
        WHERE b.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
          AND b.proname = p.proname AND b.proargtypes = p.proargtypes))
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
GROUP BY 1, 2;
SELECT o.oprname, pg_catalog.bool_or(NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_operator b
        WHERE b.oprnamespace = 'pg_catalog'::pg_catalog.regnamespace
          AND b.oprname = o.oprname AND b.oprleft = o.oprleft AND b.oprright = o.oprright))
FROM pg_catalog.pg_operator o
JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.provolatile = 'v'
GROUP BY 1;
WITH deps AS (
    SELECT w.ev_class AS rel, d.refclassid, d.refobjid
    FROM pg_catalog.pg_rewrite w
    JOIN pg_catalog.pg_class c ON c.oid = w.ev_class AND c.relkind = 'v'
    JOIN pg_catalog.pg_depend d
      ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = w.oid
    UNION
    SELECT pol.polrelid, d.refclassid, d.refobjid
    FROM pg_catalog.pg_policy pol
    JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid AND c.relrowsecurity
    JOIN pg_catalog.pg_depend d
      ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = pol.oid
), edges AS (
    SELECT deps.rel, 'f' AS kind, p.pronamespace AS ns, p.proname AS name
    FROM deps JOIN pg_catalog.pg_proc p ON p.oid = deps.refobjid
    WHERE deps.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.provolatile = 'v'
    UNION
    SELECT deps.rel, 'f', p.pronamespace, p.proname
    FROM deps JOIN pg_catalog.pg_operator o ON o.oid = deps.refobjid
    JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode
    WHERE deps.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass
      AND p.provolatile = 'v'
    UNION
    SELECT deps.rel, 'r', r.relnamespace, r.relname
    FROM deps JOIN pg_catalog.pg_class r ON r.oid = deps.refobjid
    WHERE deps.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND r.oid <> deps.rel
)
SELECT rn.nspname, c.relname, edges.kind, n.nspname, edges.name
FROM edges
JOIN pg_catalog.pg_class c ON c.oid = edges.rel
JOIN pg_catalog.pg_namespace rn ON rn.oid = c.relnamespace
JOIN pg_catalog.pg_namespace n ON n.oid = edges.ns
WHERE rn.nspname NOT IN ('pg_catalog', 'information_schema');
SELECT pg_catalog.array_to_string(pg_catalog.current_schemas(false), ',')
"""
"""Functions by volatility (and whether a volatile one's argument types
differ from every built-in's of its name); operators whose function is
volatile (likewise); what views and row-level security policies read and
call; the default search_path."""

Rows = list[list[bytes | None]]


def _read_only(qualified: dict[str, bool], bare: dict[str, bool]) -> frozenset[str]:
    """Names (lower case) whose every function is not volatile: `schema.name`
    for the functions of one schema, `name` when so in every schema."""
    return frozenset(
        [name for name, vetted in qualified.items() if vetted]
        + [name for name, vetted in bare.items() if vetted]
    )


def _by_volatility(rows: Rows) -> tuple[dict[str, bool], dict[str, bool]]:
    """Whether every function of each `schema.name`, and of each bare name
    over all schemas, is not volatile."""
    qualified: dict[str, bool] = {}
    bare: dict[str, bool] = {}
    for schema, name, not_volatile, _ in rows:
        if schema is None or name is None:
            continue
        key = name.decode().lower()
        vetted = not_volatile == b"t"
        qualified_key = f"{schema.decode().lower()}.{key}"
        qualified[qualified_key] = qualified.get(qualified_key, True) and vetted
        bare[key] = bare.get(key, True) and vetted
    return qualified, bare


def relation_calls(rows: Rows) -> dict[str, frozenset[str]]:
    """`schema.name` of each relation whose reading runs functions that may
    write, with those functions (`schema.name`, or the bare name of a
    built-in), from (schema, relation, kind, schema, name) rows: kind `f`
    for a volatile function it calls, `r` for a relation it reads.
    Volatile built-ins that only read (`random`) are left out."""
    calls: dict[str, set[str]] = {}
    reads: dict[str, set[str]] = {}
    for rel_schema, rel_name, kind, ref_schema, ref_name in rows:
        if rel_schema is None or rel_name is None or ref_schema is None or ref_name is None:
            continue
        relation = f"{rel_schema.decode()}.{rel_name.decode()}"
        if kind == b"r":
            reads.setdefault(relation, set()).add(f"{ref_schema.decode()}.{ref_name.decode()}")
            continue
        schema, name = ref_schema.decode().lower(), ref_name.decode().lower()
        if schema == "pg_catalog":
            if name not in builtin_read_functions():
                calls.setdefault(relation, set()).add(name)
        else:
            calls.setdefault(relation, set()).add(f"{schema}.{name}")
    return {
        relation: found
        for relation in reads.keys() | calls.keys()
        if (found := _closure(relation, calls, reads))
    }


def _closure(start: str, calls: dict[str, set[str]], reads: dict[str, set[str]]) -> frozenset[str]:
    """What reading `start` runs: its own calls and those of what it reads."""
    found: set[str] = set()
    seen = {start}
    pending = [start]
    while pending:
        relation = pending.pop()
        found.update(calls.get(relation, ()))
        for read in reads.get(relation, ()):
            if read not in seen:
                seen.add(read)
                pending.append(read)
    return frozenset(found)


def database_code(functions: Rows, operators: Rows, relations: Rows) -> DatabaseCode:
    """The DatabaseCode of these catalog rows (see CATALOG_SQL)."""
    qualified, bare = _by_volatility(functions)
    shadowing = {
        name.decode().lower()
        for _, name, _, other_types in functions
        if name and other_types == b"t"
    }
    for name, other_types in operators:
        if name is not None:
            bare[f"operator({name.decode()})"] = False
            if other_types == b"t":
                shadowing.add(f"operator({name.decode()})")
    return DatabaseCode(
        read_only=_read_only(qualified, bare),
        volatile_names=frozenset(name for name, vetted in bare.items() if not vetted),
        shadowing_names=frozenset(shadowing),
        relation_calls=MappingProxyType(relation_calls(relations)),
    )


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    code: DatabaseCode
    """What statements may run that their text does not show (DatabaseCode)."""
    default_schemas: tuple[str, ...]
    """Where unqualified names resolve in a new session, in order."""

    @property
    def default_search_path_is_public(self) -> bool:
        return self.default_schemas == ("public",)


async def load_policy_facts(run: QueryRunner) -> PolicyFacts:
    functions, operators, relations, path = await run(CATALOG_SQL)
    schemas = (path[0][0] or b"").decode() if path else ""
    return PolicyFacts(
        code=database_code(functions, operators, relations),
        default_schemas=tuple(s for s in schemas.split(",") if s),
    )
