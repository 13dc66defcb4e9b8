"""Opt-in backend session pooling: reuse without sharing state between clients."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from tests.conftest import base_config
from tests.helpers import GatewayThread


@pytest.fixture(scope="module")
def pooled(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    config = base_config(pg, tmp_path_factory.mktemp("pooled"))
    raw = config.model_dump(mode="json")
    raw["connections"][0]["pool"] = {"size": 2}
    thread = GatewayThread(type(config).model_validate(raw)).start()
    yield thread
    thread.stop()


def run(
    gateway: GatewayThread, token: str, sql: str, user: str = "alice", **params: str
) -> list[str]:
    result = subprocess.run(
        [
            "psql",
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            gateway.dsn(token, user=user, **params),
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def wait_for_pool(gateway: GatewayThread, size: int) -> None:
    assert gateway.gateway is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pool = gateway.gateway.pools.get("app")
        if pool is not None and len(pool.idle) >= size:
            return
        time.sleep(0.02)
    raise AssertionError("the backend session was not returned to the pool")


def test_a_reused_session_carries_no_state(pooled: GatewayThread) -> None:
    first_token = pooled.token("alice")
    pid = run(
        pooled,
        first_token,
        "SET work_mem = '1MB'; PREPARE leftover AS SELECT 1; "
        "CREATE TEMP TABLE scratch (x int); LISTEN secrets; "
        "SELECT pg_advisory_lock(42); SELECT pg_backend_pid()",
    )[-1]
    wait_for_pool(pooled, 1)
    second = run(
        pooled,
        pooled.token("bob", groups=("ops",)),
        "SELECT pg_backend_pid(), current_setting('work_mem'), "
        "(SELECT count(*) FROM pg_prepared_statements), "
        "(SELECT count(*) FROM pg_listening_channels()), "
        "to_regclass('pg_temp.scratch') IS NULL, "
        "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()), "
        "current_setting('application_name'), current_user",
        user="bob",
        application_name="second-client",
    )
    assert second == [f"{pid}|4MB|0|0|t|0|second-client|app"]


def test_a_session_ended_inside_a_transaction_is_not_reused(pooled: GatewayThread) -> None:
    token = pooled.token("alice")
    with psycopg.connect(pooled.dsn(token)) as conn:
        conn.execute("SELECT 1")  # psycopg opened a transaction
        in_tx_pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        conn.close()  # ends the session mid-transaction
    time.sleep(0.3)
    assert pooled.gateway is not None
    idle_pids = {p.key.process_id for p in pooled.gateway.pools["app"].idle if p.key}
    assert in_tx_pid is not None
    assert in_tx_pid[0] not in idle_pids


def test_startup_options_bypass_the_pool(pooled: GatewayThread) -> None:
    token = pooled.token("alice")
    run(pooled, token, "SELECT 1")
    wait_for_pool(pooled, 1)
    got = run(pooled, token, "SHOW DateStyle", options="-c DateStyle=German")
    assert got == ["German,", "DMY"]


def test_pool_serves_many_sessions(pooled: GatewayThread) -> None:
    token = pooled.token("alice")
    pids = {run(pooled, token, "SELECT pg_backend_pid()")[0] for _ in range(10)}
    assert len(pids) <= 3
    assert pooled.gateway is not None
    assert pooled.gateway.pools["app"].reuses >= 8
