"""A SELECT that calls a function which may write is not a read: libpq
against the throwaway PostgreSQL, through the ai-agent preset. The gateway
reads the database's catalog: its functions that are not volatile (which
PostgreSQL does not let write) stay reads."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.devservers.postgres import ThrowawayPostgres
from sluice.proxy.pg_policy_catalog import database_code, relation_calls
from tests.conftest import APP_PASSWORD
from tests.helpers import GatewayThread
from tests.proxy.conftest import run_steps, was_denied

FUNCTIONS = (
    "DROP SCHEMA IF EXISTS reporting CASCADE",
    "DROP TABLE IF EXISTS orders",
    "DROP FUNCTION IF EXISTS wipe_orders()",
    "CREATE TABLE orders (id int)",
    "INSERT INTO orders SELECT generate_series(1, 5)",
    "CREATE SCHEMA reporting",
    """CREATE FUNCTION wipe_orders() RETURNS bigint LANGUAGE sql AS $$
         WITH gone AS (DELETE FROM orders RETURNING 1) SELECT count(*) FROM gone $$""",
    """CREATE FUNCTION reporting.order_count() RETURNS bigint LANGUAGE sql STABLE AS $$
         SELECT count(*) FROM orders $$""",
    # One name, two overloads: one of them may write.
    """CREATE FUNCTION reporting.touch(int) RETURNS int LANGUAGE sql IMMUTABLE AS $$
         SELECT $1 $$""",
    """CREATE FUNCTION reporting.touch(text) RETURNS bigint LANGUAGE sql AS $$
         WITH gone AS (DELETE FROM orders WHERE id = 1 RETURNING 1)
         SELECT count(*) FROM gone $$""",
)


def _orders(pg: ThrowawayPostgres, *setup: str) -> int:
    dsn = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql in setup:
            conn.execute(sql)
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture(scope="module", autouse=True)
def functions(pg: ThrowawayPostgres) -> None:
    """Made before the module's gateway reads the catalog."""
    assert _orders(pg, *FUNCTIONS) == 5


def test_a_function_that_deletes_is_held_for_approval(
    pg: ThrowawayPostgres, agent_gateway: GatewayThread, denied: list[str]
) -> None:
    called, from_clause, overloaded, plain = run_steps(
        agent_gateway,
        "sql:SELECT wipe_orders()",
        "sql:SELECT * FROM wipe_orders()",
        "sql:SELECT reporting.touch(1)",
        "sql:SELECT count(*), max(id) FROM orders",
    )
    for refused in (called, from_clause, overloaded):
        assert was_denied(refused)
    assert plain["ok"]
    assert denied == [
        "SELECT wipe_orders()",
        "SELECT * FROM wipe_orders()",
        "SELECT reporting.touch(1)",
    ]
    assert _orders(pg) == 5


def test_the_databases_functions_that_cannot_write_stay_reads(
    agent_gateway: GatewayThread, denied: list[str]
) -> None:
    qualified, path, bare = run_steps(
        agent_gateway,
        "sql:SELECT reporting.order_count()",
        "sql:SET search_path = reporting, public",
        "sql:SELECT order_count()",  # by its bare name
    )
    assert qualified["tag"] == "SELECT 1"
    assert path["ok"]
    assert bare["tag"] == "SELECT 1"
    assert denied == []


def test_names_are_vetted_only_when_every_overload_is_not_volatile() -> None:
    rows: list[list[bytes | None]] = [
        [b"reporting", b"order_count", b"t", b"f"],
        [b"reporting", b"touch", b"f", b"f"],
        [b"public", b"touch", b"t", b"f"],
        [b"public", b"Shout", b"t", b"f"],
    ]
    assert database_code(rows, [], []).read_only == {
        "reporting.order_count",
        "order_count",
        "public.touch",
        "public.shout",
        "shout",
    }


def test_the_catalog_rows_make_the_database_code() -> None:
    functions: list[list[bytes | None]] = [
        [b"public", b"lower", b"f", b"t"],  # lower(integer): other argument types
        [b"public", b"gen_random_uuid", b"f", b"f"],  # pgcrypto's, the built-in's types
        [b"reporting", b"order_count", b"t", b"f"],
    ]
    operators: list[list[bytes | None]] = [[b"===", b"t"], [b"=", b"f"]]
    relations: list[list[bytes | None]] = [
        [b"app", b"outer", b"r", b"app", b"inner"],
        [b"app", b"inner", b"f", b"app", b"drain"],
        [b"app", b"inner", b"f", b"pg_catalog", b"random"],  # volatile, only reads
        [b"app", b"ids", b"f", b"pg_catalog", b"nextval"],
        [b"app", b"loop_a", b"r", b"app", b"loop_b"],  # policies may read each other
        [b"app", b"loop_b", b"r", b"app", b"loop_a"],
        [b"app", b"plain", b"r", b"app", b"table"],
    ]
    code = database_code(functions, operators, relations)
    assert code.read_only == {"reporting.order_count", "order_count"}
    assert code.volatile_names == {"lower", "gen_random_uuid", "operator(===)", "operator(=)"}
    assert code.shadowing_names == {"lower", "operator(===)"}
    assert dict(code.relation_calls) == {
        "app.outer": {"app.drain"},
        "app.inner": {"app.drain"},
        "app.ids": {"nextval"},
    }
    assert code.bare_relation_calls["outer"] == {"app.drain"}


RELATIONS = st.sampled_from(["a", "b", "c", "d"])


@settings(max_examples=200, deadline=None)
@given(
    reads=st.lists(st.tuples(RELATIONS, RELATIONS), max_size=8),
    calls=st.lists(st.tuples(RELATIONS, st.sampled_from(["f", "g"])), max_size=4),
)
def test_what_a_relation_runs_is_what_it_reaches(
    reads: list[tuple[str, str]], calls: list[tuple[str, str]]
) -> None:
    """Through views that read views (and policies that read each other, in
    cycles too), a relation runs every function some relation it reaches calls."""
    rows: list[list[bytes | None]] = [
        [b"s", src.encode(), b"r", b"s", dst.encode()] for src, dst in reads
    ]
    rows += [[b"s", rel.encode(), b"f", b"s", fn.encode()] for rel, fn in calls]
    got = relation_calls(rows)
    for start in "abcd":
        reached, frontier = {start}, [start]
        while frontier:
            here = frontier.pop()
            for src, dst in reads:
                if src == here and dst not in reached:
                    reached.add(dst)
                    frontier.append(dst)
        expected = {f"s.{fn}" for rel, fn in calls if rel in reached}
        assert got.get(f"s.{start}", frozenset()) == expected
