"""A connection with no policy, no masking and recording off: the light data path.

Responses are then only walked for frame boundaries; the session must behave
exactly as through the full path, audit every statement, and still refuse
(with its own error) a statement that cannot be audited when audit is required.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sluice.config import Config, ConnectionRecording
from sluice.devservers.postgres import ThrowawayPostgres
from tests.conftest import APP_PASSWORD, base_config
from tests.helpers import GatewayThread, disk_full_for


def _unrecorded(config: Config) -> Config:
    first, *rest = config.connections
    light = first.model_copy(update={"recording": ConnectionRecording(enabled=False)})
    return config.model_copy(update={"connections": (light, *rest)})


@pytest.fixture
def unrecorded(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    data_dir = tmp_path_factory.mktemp("unrecorded")
    config = base_config(
        pg, data_dir, audit={"sinks": [{"type": "file", "path": "audit.jsonl", "required": True}]}
    )
    thread = GatewayThread(_unrecorded(config)).start()
    yield thread
    thread.stop()


def _audit(data_dir: Path) -> list[dict[str, object]]:
    text = (data_dir / "audit.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_results_errors_and_transactions_are_those_of_the_backend(
    unrecorded: GatewayThread, pg: ThrowawayPostgres
) -> None:
    token = unrecorded.token()
    direct = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    query = "SELECT g, md5(g::text), g::float8 / 3 FROM generate_series(1, 3000) AS g"
    with psycopg.connect(direct) as conn:
        expected = conn.execute(query).fetchall()
    with psycopg.connect(unrecorded.dsn(token)) as conn:
        assert conn.execute(query).fetchall() == expected  # simple protocol
        assert conn.execute(query, prepare=True, binary=True).fetchall() == expected
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        conn.rollback()
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE light (a int)")
            conn.execute("INSERT INTO light VALUES (%s), (%s)", (1, 2))
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with conn.pipeline():
            first = conn.execute("SELECT sum(a) FROM light")
            second = conn.execute("SELECT count(*) FROM light WHERE a > %s", (1,))
        assert (first.fetchone(), second.fetchone()) == ((3,), (1,))
    recordings = unrecorded.config.data_dir / "recordings"
    assert not list(recordings.glob("*.slog")) if recordings.exists() else True
    statements = [
        e["statement"]
        for e in _audit(unrecorded.config.data_dir)
        if e["type"] == "statement.allowed"
    ]
    assert query in statements
    assert "SELECT 1 / 0" in statements


def test_a_statement_that_cannot_be_audited_is_refused_and_the_session_goes_on(
    unrecorded: GatewayThread, pg: ThrowawayPostgres
) -> None:
    token = unrecorded.token()
    with psycopg.connect(unrecorded.dsn(token), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with (
            disk_full_for("audit.jsonl"),
            pytest.raises(psycopg.errors.InsufficientPrivilege) as info,
        ):
            conn.execute("CREATE TABLE unaudited_probe (a int)")
        assert "could not be recorded" in str(info.value)
        assert conn.execute("SELECT 2").fetchone() == (2,)
    direct = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(direct) as check:
        assert check.execute("SELECT to_regclass('unaudited_probe')").fetchone() == (None,)
