"""Calls of functions that may write: a SELECT is only a read if every
function it calls is a PostgreSQL built-in that leaves the database as it is
(or one the policy vouches for in `read_only_functions`)."""

from __future__ import annotations

import pytest

from sluice.events import QueryOrigin
from sluice.policy import Allow, Block, PolicyEngine, RequireApproval
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


def test_the_databases_catalog_vets_its_own_functions(engine: PolicyEngine) -> None:
    """`read_only_functions` of the query (from the database's catalog) keep
    calls of them reads; verdicts are kept apart per set."""

    def verdict(sql: str, known: frozenset[str]) -> object:
        return engine.decide_query(
            make_context(),
            sql,
            QueryOrigin.SIMPLE,
            None,
            policy_name="ai-agent",
            read_only_functions=known,
        )

    known = frozenset({"reporting.order_count", "order_count"})
    assert isinstance(verdict("SELECT reporting.order_count()", known), Allow)
    assert isinstance(verdict("SELECT reporting.order_count()", frozenset()), RequireApproval)
    held = verdict("SELECT order_count(), wipe_orders()", known)
    assert isinstance(held, RequireApproval)
    assert "calling wipe_orders()" in held.reason
    assert "order_count" not in held.reason
