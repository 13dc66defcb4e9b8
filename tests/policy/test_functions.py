"""Calls of functions that may write: a SELECT is only a read if every
function it calls is a PostgreSQL built-in that leaves the database as it is
(or one the policy vouches for in `read_only_functions`)."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from sluice.events import QueryOrigin
from sluice.policy import Allow, Block, PolicyEngine, RequireApproval
from sluice.policy.database import DatabaseCode
from sluice.policy.sql import builtin_read_functions, classify

from .conftest import compile_policies, make_context, query


def _unvetted(sql: str) -> list[str]:
    return sorted(classify(sql).statements[0].unvetted_functions)


@pytest.mark.parametrize(
    ("sql", "unvetted"),
    [
        ("SELECT wipe_orders()", ["wipe_orders"]),
        ("SELECT * FROM reporting.refresh(1)", ["reporting.refresh"]),
        ("SELECT cron.schedule('x', 'DROP TABLE t')", ["cron.schedule"]),
        ("SELECT myschema.lower('A')", ["myschema.lower"]),  # not the built-in
        ("SELECT pg_advisory_lock(1)", ["pg_advisory_lock"]),  # volatile, holds a lock
        ("SELECT ts_rewrite('a'::tsquery, 'SELECT 1')", ["ts_rewrite"]),  # runs its text
        ("SELECT 1 WHERE EXISTS (SELECT f(x) FROM t)", ["f"]),
        ("SELECT lower(name), count(*), now(), random() FROM t GROUP BY 1", []),
        ("SELECT extract(year FROM now()), substring('abc' FROM 2), trim(' a ')", []),
        ("SELECT pg_catalog.lower('A'), gen_random_uuid(), pg_relation_size('t')", []),
        ("EXPLAIN SELECT wipe_orders()", []),  # not run
        ("SELECT nextval('s'), pg_terminate_backend(1)", []),  # categorised by name
        # Operators run functions too: only pg_catalog's are known.
        ("SELECT a === b, a <=> b FROM t", ["operator(<=>)", "operator(===)"]),
        ("SELECT a OPERATOR(myschema.+) b FROM t", ["operator(myschema.+)"]),
        ("SELECT * FROM t ORDER BY a USING ===", ["operator(===)"]),
        ("SELECT * FROM t WHERE a === ANY (SELECT b FROM u)", ["operator(===)"]),
        ("SELECT a != b, a @> b, a LIKE b, a = ANY(b), a || b, NULLIF(a, b) FROM t", []),
    ],
)
def test_which_calls_are_unvetted(sql: str, unvetted: list[str]) -> None:
    assert _unvetted(sql) == unvetted


def test_the_builtin_list_is_postgresqls() -> None:
    names = builtin_read_functions()
    assert {"lower", "count", "jsonb_build_object", "date_trunc", "to_char"} <= names
    # Volatile built-ins with effects are not in it.
    assert not {"nextval", "set_config", "pg_read_file", "lo_unlink", "ts_rewrite"} & names


def test_the_agent_preset_holds_a_call_that_may_write(engine: PolicyEngine) -> None:
    verdict = engine.decide(query("SELECT wipe_orders()"), policy_name="ai-agent", prepared={})
    assert isinstance(verdict, RequireApproval)
    assert verdict.rule == "procedural-needs-approval"
    assert "calling wipe_orders(), not known to be read-only" in verdict.reason
    read_only = engine.decide(query("SELECT wipe_orders()"), policy_name="read-only", prepared={})
    assert isinstance(read_only, Block)
    plain = engine.decide(query("SELECT lower(name) FROM t"), policy_name="ai-agent", prepared={})
    assert isinstance(plain, Allow)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT table_to_xml('billing.invoices', true, true, '')",
        "SELECT schema_to_xml_and_xmlschema('billing', true, true, '')",
        "SELECT database_to_xml(true, true, '')",
        "SELECT cursor_to_xml('c', 10, false, true, '')",
    ],
)
def test_functions_reading_relations_they_do_not_name_are_procedural(
    engine: PolicyEngine, sql: str
) -> None:
    """Their rows come from relations the statement does not name, out of
    sight of table rules and column masking."""
    verdict = engine.decide(query(sql), policy_name="ai-agent", prepared={})
    assert isinstance(verdict, RequireApproval)
    assert verdict.rule == "procedural-needs-approval"
    schema_only = query("SELECT table_to_xmlschema('billing.invoices', true, true, '')")
    assert isinstance(engine.decide(schema_only, policy_name="ai-agent", prepared={}), Allow)


def test_a_policy_vouches_for_its_own_functions() -> None:
    engine = compile_policies(
        {"name": "base", "extends": "ai-agent", "read_only_functions": ["reporting.*"]},
        {"name": "team", "extends": "base", "read_only_functions": ["order_total"]},
    )

    def verdict(sql: str) -> object:
        return engine.decide(query(sql), policy_name="team", prepared={})

    assert isinstance(verdict("SELECT * FROM reporting.daily(1)"), Allow)  # inherited
    assert isinstance(verdict("SELECT order_total(7)"), Allow)
    assert isinstance(verdict("SELECT sales.order_total(7)"), Allow)  # by its name
    held = verdict("SELECT order_total(7), wipe_orders()")
    assert isinstance(held, RequireApproval)
    assert "calling wipe_orders(), not known to be read-only" in held.reason
    # Vouching for a function does not make what calls it a read.
    assert isinstance(verdict("DELETE FROM t WHERE id = order_total(1)"), RequireApproval)
    assert isinstance(verdict("DELETE FROM t WHERE order_total(1) > 0"), Block)


def _decide(
    engine: PolicyEngine, sql: str, database: DatabaseCode, *, search_path_changed: bool = False
) -> object:
    return engine.decide_query(
        make_context(),
        sql,
        QueryOrigin.SIMPLE,
        None,
        policy_name="ai-agent",
        database=database,
        search_path_changed=search_path_changed,
    )


def test_the_databases_catalog_vets_its_own_functions(engine: PolicyEngine) -> None:
    """Functions the database's catalog shows cannot write keep calls of them
    reads; verdicts are kept apart per reading of the catalog."""
    known = DatabaseCode(read_only=frozenset({"reporting.order_count", "order_count"}))
    assert isinstance(_decide(engine, "SELECT reporting.order_count()", known), Allow)
    unknown = _decide(engine, "SELECT reporting.order_count()", DatabaseCode())
    assert isinstance(unknown, RequireApproval)
    held = _decide(engine, "SELECT order_count(), wipe_orders()", known)
    assert isinstance(held, RequireApproval)
    assert "calling wipe_orders()" in held.reason
    assert "order_count" not in held.reason


@pytest.mark.parametrize(
    ("sql", "builtin_calls"),
    [
        ("SELECT lower(name), a = b, pg_catalog.upper(x) FROM t", ["lower", "operator(=)"]),
        ("SELECT a OPERATOR(pg_catalog.=) b, nextval('s'), f(x) FROM t", []),
        ("EXPLAIN SELECT lower(x)", []),  # not run
    ],
)
def test_builtins_called_by_bare_name_are_noted(sql: str, builtin_calls: list[str]) -> None:
    assert sorted(classify(sql).statements[0].builtin_calls) == builtin_calls


def test_a_volatile_namesake_of_a_builtin_makes_its_calls_procedural(
    engine: PolicyEngine,
) -> None:
    """`public.lower(integer)`, volatile, is what `lower(5)` runs; a volatile
    `=` on some type is what `a = b` may run. pgcrypto's `gen_random_uuid()`
    has the built-in's argument types: it runs only when the search_path
    puts its schema first."""
    database = DatabaseCode(
        volatile_names=frozenset({"lower", "operator(=)", "gen_random_uuid"}),
        shadowing_names=frozenset({"lower", "operator(=)"}),
    )
    held = _decide(engine, "SELECT lower(5)", database)
    assert isinstance(held, RequireApproval)
    assert "calling lower(), not known to be read-only" in held.reason
    assert isinstance(_decide(engine, "SELECT id FROM t WHERE a = b", database), RequireApproval)
    # Named in pg_catalog, it is the built-in.
    assert isinstance(_decide(engine, "SELECT pg_catalog.lower('A')", database), Allow)
    assert isinstance(_decide(engine, "SELECT upper('a'), a < b FROM t", database), Allow)
    assert isinstance(_decide(engine, "SELECT gen_random_uuid()", database), Allow)
    moved = _decide(engine, "SELECT gen_random_uuid()", database, search_path_changed=True)
    assert isinstance(moved, RequireApproval)


def test_reading_a_view_runs_what_it_calls(engine: PolicyEngine) -> None:
    database = DatabaseCode(
        relation_calls=MappingProxyType(
            {
                "public.v": frozenset({"public.wipe"}),
                "billing.due": frozenset({"nextval"}),
            }
        )
    )
    held = _decide(engine, "SELECT id FROM v", database)
    assert isinstance(held, RequireApproval)
    assert "SELECT on public.v calling public.wipe(), not known to be read-only" in held.reason
    nested = _decide(engine, "SELECT 1 WHERE EXISTS (SELECT 1 FROM billing.due)", database)
    assert isinstance(nested, RequireApproval)
    assert isinstance(_decide(engine, "SELECT * FROM due", database), Allow)  # public.due
    assert isinstance(_decide(engine, "EXPLAIN SELECT * FROM v", database), Allow)  # not run
    # Once the search_path is not known, `due` may be billing's.
    moved = _decide(engine, "SELECT * FROM due", database, search_path_changed=True)
    assert isinstance(moved, RequireApproval)
    # Vouching for the function keeps the read a read.
    vouching = compile_policies(
        {"name": "team", "extends": "ai-agent", "read_only_functions": ["wipe"]}
    )
    verdict = vouching.decide_query(
        make_context(),
        "SELECT id FROM v",
        QueryOrigin.SIMPLE,
        None,
        policy_name="team",
        database=database,
    )
    assert isinstance(verdict, Allow)
