"""Code a SELECT runs without naming it: libpq through the ai-agent preset
against the throwaway PostgreSQL. A volatile namesake of a built-in
(`public.lower(integer)` is what `lower(5)` runs), a view that calls a
function which writes (also through another view), and a row-level
security policy that does: each makes the SELECT procedural, held for
approval. The gateway reads them from the catalog as the session starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sluice.approvals.service import ApprovalService, ApprovalStatus
from sluice.devservers.postgres import ThrowawayPostgres
from tests.conftest import APP_PASSWORD, base_config
from tests.helpers import GatewayThread
from tests.proxy.conftest import AGENT, run_steps, was_denied

SETUP = (
    "DROP SCHEMA IF EXISTS hidden CASCADE",
    "CREATE SCHEMA hidden",
    "CREATE TABLE hidden.ledger (id int, balance int)",
    "INSERT INTO hidden.ledger VALUES (1, 100), (2, 100)",
    "CREATE TABLE hidden.reads (at timestamptz)",
    # Runs for lower(5): an exact match beats pg_catalog.lower(text).
    """CREATE FUNCTION public.lower(integer) RETURNS text LANGUAGE sql AS $$
         UPDATE hidden.ledger SET balance = balance - 1; SELECT 'x' $$""",
    """CREATE FUNCTION hidden.drain() RETURNS int LANGUAGE sql AS $$
         UPDATE hidden.ledger SET balance = 0 RETURNING 1 $$""",
    "CREATE VIEW hidden.drained AS SELECT id, hidden.drain() AS d FROM hidden.ledger",
    "CREATE VIEW hidden.ids AS SELECT id FROM hidden.drained",  # through another view
    """CREATE FUNCTION hidden.log_read() RETURNS boolean LANGUAGE sql AS $$
         INSERT INTO hidden.reads VALUES (now()) RETURNING true $$""",
    "CREATE TABLE hidden.guarded (id int)",
    "INSERT INTO hidden.guarded VALUES (1)",
    "ALTER TABLE hidden.guarded ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE hidden.guarded FORCE ROW LEVEL SECURITY",  # the owner too
    "CREATE POLICY logged ON hidden.guarded USING (hidden.log_read())",
    """CREATE FUNCTION hidden.total() RETURNS bigint LANGUAGE sql STABLE AS $$
         SELECT sum(balance) FROM hidden.ledger $$""",
    "CREATE VIEW hidden.totals AS SELECT hidden.total() AS total, random() AS r",
    # The built-in's very argument types: pg_catalog's runs unless the
    # search_path puts public first.
    """CREATE FUNCTION public.gen_random_uuid() RETURNS uuid LANGUAGE sql AS $$
         UPDATE hidden.ledger SET balance = balance - 1;
         SELECT '00000000-0000-0000-0000-000000000000'::uuid $$""",
)
TEARDOWN = (
    "DROP SCHEMA hidden CASCADE",
    "DROP FUNCTION public.lower(integer)",
    "DROP FUNCTION public.gen_random_uuid()",
)


def _run(pg: ThrowawayPostgres, *sql: str) -> list[tuple[object, ...]]:
    dsn = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in sql[:-1]:
            conn.execute(statement)
        return conn.execute(sql[-1]).fetchall()


def _untouched(pg: ThrowawayPostgres) -> bool:
    balances = _run(pg, "SELECT balance FROM hidden.ledger ORDER BY id")
    reads = _run(pg, "SELECT count(*) FROM hidden.reads")
    return balances == [(100,), (100,)] and reads == [(0,)]


@pytest.fixture(scope="module", autouse=True)
def objects(pg: ThrowawayPostgres) -> Iterator[None]:
    """Made before the module's gateway reads the catalog; dropped after."""
    _run(pg, *SETUP, "SELECT 1")
    yield
    _run(pg, *TEARDOWN, "SELECT 1")


def test_code_a_select_runs_without_naming_it_is_held(
    pg: ThrowawayPostgres, agent_gateway: GatewayThread, denied: list[str]
) -> None:
    namesake, view, nested, guarded, totals = run_steps(
        agent_gateway,
        "sql:SELECT lower(5)",
        "sql:SELECT id FROM hidden.drained",
        "sql:SELECT id FROM hidden.ids",
        "sql:SELECT id FROM hidden.guarded",
        "sql:SELECT total FROM hidden.totals",
    )
    for refused in (namesake, view, nested, guarded):
        assert was_denied(refused), refused
    assert denied == [
        "SELECT lower(5)",
        "SELECT id FROM hidden.drained",
        "SELECT id FROM hidden.ids",
        "SELECT id FROM hidden.guarded",
    ]
    assert totals["tag"] == "SELECT 1"  # a STABLE function and random() only read
    assert _untouched(pg)


def test_a_namesake_with_the_builtins_argument_types_runs_only_first_on_the_path(
    pg: ThrowawayPostgres, agent_gateway: GatewayThread, denied: list[str]
) -> None:
    builtin, path, namesake = run_steps(
        agent_gateway,
        "sql:SELECT gen_random_uuid()",
        "sql:SET search_path = public, pg_catalog",
        "sql:SELECT gen_random_uuid()",
    )
    assert builtin["tag"] == "SELECT 1"
    assert path["ok"]
    assert was_denied(namesake)
    assert denied == ["SELECT gen_random_uuid()"]
    assert _untouched(pg)  # the first call ran pg_catalog's


def test_functions_that_read_relations_they_do_not_name_are_held(
    pg: ThrowawayPostgres, agent_gateway: GatewayThread, denied: list[str]
) -> None:
    """table_to_xml('hidden.ledger', ...) returns the table's rows, though the
    statement names no table: table rules and column masking would not see
    it. Neither would they see what schema_to_xml, database_to_xml or
    cursor_to_xml read."""
    steps = run_steps(
        agent_gateway,
        "sql:SELECT table_to_xml('hidden.ledger', true, true, '')",
        "sql:SELECT schema_to_xml('hidden', true, true, '')",
        "sql:SELECT database_to_xml_and_xmlschema(true, true, '')",
        "sql:SELECT table_to_xmlschema('hidden.ledger', true, true, '')",  # no data
    )
    for refused in steps[:3]:
        assert was_denied(refused), refused
    assert steps[3]["tag"] == "SELECT 1"
    assert len(denied) == 3


def test_the_approver_is_told_what_would_run(
    agent_gateway: GatewayThread, denied: list[str]
) -> None:
    assert agent_gateway.gateway is not None
    (refused,) = run_steps(agent_gateway, "sql:SELECT id FROM hidden.ids")
    assert was_denied(refused)
    service = ApprovalService(agent_gateway.gateway.store)
    (request,) = [
        r
        for r in service.list_requests(status=ApprovalStatus.DENIED)
        if r.statement == "SELECT id FROM hidden.ids"
    ][-1:]
    assert "SELECT on hidden.ids calling hidden.drain(), not known to be read-only" in (
        request.reason
    )


def test_a_session_whose_catalog_cannot_be_read_is_refused(
    pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    """Without the catalog the policy cannot tell a read from a write."""
    config = base_config(
        pg,
        tmp_path,
        policy="agent",
        policies=[{"name": "agent", "extends": "ai-agent", "approvers": ["dba"]}],
    )
    gateway = GatewayThread(config).start()
    dsn = gateway.dsn(gateway.token(AGENT, groups=("agents",)), user=AGENT)
    pg.psql("REVOKE SELECT ON pg_catalog.pg_depend FROM PUBLIC", dbname="app")
    try:
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(dsn)
    finally:
        pg.psql("GRANT SELECT ON pg_catalog.pg_depend TO PUBLIC", dbname="app")
        gateway.stop()
    assert "cannot read the catalog its policy needs" in str(info.value)
    assert "permission denied for table pg_depend" in str(info.value)
