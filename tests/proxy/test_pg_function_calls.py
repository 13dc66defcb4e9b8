"""A SELECT that calls a function which writes is not a read: real psql and
libpq against the throwaway PostgreSQL, through the ai-agent preset."""

from __future__ import annotations

import psycopg

from sluice.devservers.postgres import ThrowawayPostgres
from tests.conftest import APP_PASSWORD
from tests.helpers import GatewayThread
from tests.proxy.conftest import run_steps, was_denied

WIPE = """
CREATE OR REPLACE FUNCTION wipe_orders() RETURNS bigint LANGUAGE sql AS $$
  WITH gone AS (DELETE FROM orders RETURNING 1) SELECT count(*) FROM gone
$$
"""


def _orders(pg: ThrowawayPostgres, *setup: str) -> int:
    dsn = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql in setup:
            conn.execute(sql)
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
        assert row is not None
        return int(row[0])


def test_a_function_that_deletes_is_held_for_approval(
    pg: ThrowawayPostgres, agent_gateway: GatewayThread, denied: list[str]
) -> None:
    created = _orders(
        pg,
        "DROP TABLE IF EXISTS orders",
        "CREATE TABLE orders (id int)",
        "INSERT INTO orders SELECT generate_series(1, 5)",
        WIPE,
    )
    assert created == 5
    called, from_clause, plain = run_steps(
        agent_gateway,
        "sql:SELECT wipe_orders()",
        "sql:SELECT * FROM wipe_orders()",
        "sql:SELECT count(*), max(id) FROM orders",
    )
    for refused in (called, from_clause):
        assert was_denied(refused)
    assert plain["ok"]
    assert denied == ["SELECT wipe_orders()", "SELECT * FROM wipe_orders()"]
    assert _orders(pg) == 5
