"""Recording is required by default: no unrecorded statement reaches the backend."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from tests.conftest import APP_PASSWORD, base_config
from tests.helpers import GatewayThread, disk_full_for


@pytest.fixture
def recorded(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    thread = GatewayThread(base_config(pg, tmp_path_factory.mktemp("recorded"))).start()
    yield thread
    thread.stop()


def test_a_statement_that_cannot_be_recorded_is_refused(
    recorded: GatewayThread, pg: ThrowawayPostgres
) -> None:
    token = recorded.token()
    with psycopg.connect(recorded.dsn(token), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with (
            disk_full_for(".slog"),  # session logs hit a full disk
            pytest.raises(psycopg.errors.InsufficientPrivilege) as info,
        ):
            conn.execute("CREATE TABLE unrecorded_probe (a int)")
    assert "could not be recorded" in str(info.value)
    direct = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(direct) as check:
        assert check.execute("SELECT to_regclass('unrecorded_probe')").fetchone() == (None,)
    with psycopg.connect(recorded.dsn(token)) as fresh:  # other sessions keep working
        assert fresh.execute("SELECT 2").fetchone() == (2,)
