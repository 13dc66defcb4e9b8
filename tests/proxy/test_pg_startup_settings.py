"""Settings a client asks for at startup are judged like the SETs they are.

PostgreSQL applies every startup parameter but user, database and options
as a setting, and `options` as `-c name=value` switches, before the first
statement. `options=-c role=...` must not do what `SET ROLE` may not, and
`-c search_path=billing` must not make `invoices` mean `billing.invoices`
behind a rule on schema billing. Nor may a database's own default
search_path. Real psycopg and asyncpg against the throwaway PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from tests.conftest import APP_PASSWORD, base_config
from tests.helpers import GatewayThread

POLICIES = [
    {
        "name": "agent",
        "extends": "ai-agent",
        "approvers": ["dba"],
        "rules": [{"name": "no-billing", "when": {"schemas": ["billing"]}, "action": "block"}],
    }
]


@pytest.fixture(scope="module")
def gateway(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    dsn = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS billing CASCADE")
        conn.execute("CREATE SCHEMA billing")
        conn.execute("CREATE TABLE billing.invoices (id int, amount int)")
        conn.execute("INSERT INTO billing.invoices VALUES (1, 500)")
    config = base_config(
        pg, tmp_path_factory.mktemp("startup-settings"), policy="agent", policies=POLICIES
    )
    thread = GatewayThread(config).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def dsn(gateway: GatewayThread) -> str:
    return gateway.dsn(gateway.token("agent", groups=("agents",)), user="agent")


def test_search_path_from_options_does_not_hide_a_schema(dsn: str) -> None:
    with psycopg.connect(dsn + " options='-c search_path=billing'", autocommit=True) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("billing",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute("SELECT amount FROM invoices")
        assert 'rule "no-billing"' in str(info.value)


def test_search_path_as_a_startup_parameter_does_not_either(
    gateway: GatewayThread, dsn: str
) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=gateway.port,
            user="agent",
            database="app",
            password=gateway.token("agent", groups=("agents",)),
            ssl="require",
            server_settings={"search_path": "billing"},
        )
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no-billing"):
                await conn.fetch("SELECT amount FROM invoices")
        finally:
            await conn.close()

    asyncio.run(run())


def test_a_role_set_at_startup_is_refused_like_set_role(gateway: GatewayThread, dsn: str) -> None:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(dsn + " options='-c role=pg_monitor'")
    message = str(info.value)
    assert "the startup setting role is blocked" in message
    assert 'rule "no-server-admin"' in message
    assert _refusal(gateway, "the startup setting role")["sqlstate"] == "42501"


def _refusal(gateway: GatewayThread, reason: str) -> dict[str, object]:
    """The `auth.failed` event with `reason`; the client may hear of its
    refusal a moment before the audit file does."""
    deadline = time.monotonic() + 10
    audit = Path(gateway.config.data_dir) / "audit.jsonl"
    while True:
        events: list[dict[str, object]] = [
            json.loads(line) for line in audit.read_text().splitlines()
        ]
        found = [e for e in events if e["type"] == "auth.failed" and reason in str(e["reason"])]
        if found or time.monotonic() > deadline:
            assert found, f"no auth.failed event for {reason!r}"
            return found[-1]
        time.sleep(0.05)


def test_options_the_gateway_cannot_read_are_refused(dsn: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="cannot judge the startup options"):
        psycopg.connect(dsn + " options='-O'")


def test_ordinary_settings_pass(dsn: str) -> None:
    options = " options='-c statement_timeout=5000 --application-name=agent\\\\ run'"
    with psycopg.connect(dsn + options, autocommit=True) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("5s",)
        assert conn.execute("SHOW application_name").fetchone() == ("agent run",)


@pytest.fixture(scope="module")
def shifted(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    """A database whose default search_path starts at billing."""
    pg.psql("DROP DATABASE IF EXISTS shifted")
    pg.psql("CREATE DATABASE shifted OWNER app")
    pg.psql("ALTER DATABASE shifted SET search_path = billing, public")
    dsn = pg.dsn(user="app", password=APP_PASSWORD, dbname="shifted")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA billing")
        conn.execute("CREATE TABLE billing.invoices (id int, amount int)")
        conn.execute("INSERT INTO billing.invoices VALUES (1, 500)")
    config = base_config(pg, tmp_path_factory.mktemp("shifted"), policy="agent", policies=POLICIES)
    first, *rest = config.connections
    moved = first.model_copy(update={"database": "shifted"})
    thread = GatewayThread(config.model_copy(update={"connections": (moved, *rest)})).start()
    yield thread
    thread.stop()
    pg.psql("DROP DATABASE shifted")


def test_a_database_default_search_path_does_not_hide_a_schema(shifted: GatewayThread) -> None:
    dsn = shifted.dsn(shifted.token("agent", groups=("agents",)), user="agent")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("billing, public",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute("SELECT amount FROM invoices")
        assert 'rule "no-billing"' in str(info.value)
