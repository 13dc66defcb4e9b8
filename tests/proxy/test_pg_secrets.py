"""Secrets a statement carries (a role's password, a pgcrypto key) reach the
server as sent but none of what the gateway keeps: the session log, the
audit trail, approval requests. Real psql and libpq against the throwaway
PostgreSQL."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from sluice.proxy.governance_setup import recording_store
from tests.conftest import base_config
from tests.helpers import GatewayThread, latest_session
from tests.proxy.conftest import run_steps, was_denied

PASSWORD = "Pw-9f3k2-not-for-logs"
KEY = "Key-7d1e-not-for-logs"
USER = "rotator"


@pytest.fixture(scope="module")
def recorded(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    pg.psql("DROP ROLE IF EXISTS secret_probe; CREATE ROLE secret_probe NOLOGIN")
    thread = GatewayThread(base_config(pg, tmp_path_factory.mktemp("secrets"))).start()
    yield thread
    thread.stop()
    pg.psql("DROP ROLE IF EXISTS secret_probe")


def _kept(gateway: GatewayThread, user: str) -> str:
    """Everything the gateway wrote: audit trail and the user's session log."""
    audit = (Path(gateway.config.data_dir) / "audit.jsonl").read_text()
    log = recording_store(gateway.config).path_for(latest_session(gateway, user)).read_text()
    return audit + log


def test_a_role_password_is_not_kept(recorded: GatewayThread) -> None:
    result = subprocess.run(
        ["psql", "-X", recorded.dsn(recorded.token(user=USER), user=USER)],
        input=f"ALTER ROLE secret_probe PASSWORD '{PASSWORD}';\n"
        f"SELECT crypt('{PASSWORD}', 'xx') IS NULL;\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kept = _kept(recorded, USER)
    assert PASSWORD not in kept
    assert "ALTER ROLE secret_probe PASSWORD '[REDACTED]'" in kept


def test_an_approval_request_holds_no_key(agent_gateway: GatewayThread, denied: list[str]) -> None:
    (refused,) = run_steps(agent_gateway, f"sql:SELECT pgp_sym_encrypt('payload', '{KEY}')")
    assert was_denied(refused)
    assert denied == ["SELECT pgp_sym_encrypt('[REDACTED]', '[REDACTED]')"]
    assert KEY not in _kept(agent_gateway, "agent")
