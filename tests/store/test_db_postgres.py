"""The store on PostgreSQL (`--store postgresql://...`), a shared one for several gateways."""

from __future__ import annotations

import datetime as dt

import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from sluice.errors import AuthenticationError
from sluice.events import Identity
from sluice.store.db import Store


@pytest.fixture(scope="module")
def pg_store(pg: ThrowawayPostgres) -> Store:
    pg.psql("DROP DATABASE IF EXISTS sluice_store")
    pg.psql("CREATE DATABASE sluice_store")
    url = f"postgresql://postgres:{pg.superuser_password}@127.0.0.1:{pg.port}/sluice_store"
    store = Store(url)
    store.migrate()
    store.migrate()  # idempotent
    return store


def test_tokens_and_sessions_round_trip_on_postgresql(pg_store: Store) -> None:
    info, token = pg_store.create_token(user="alice", groups=["dev", "ops"])
    identity, _ = pg_store.authenticate(token)
    assert identity == Identity(user="alice", groups=("dev", "ops"), token_id=info.token_id)
    now = dt.datetime.now(dt.UTC)
    pg_store.start_session(
        session_id="3f1e0b6a-0000-4000-8000-000000000001",
        identity=identity,
        connection="app",
        protocol="postgres",
        client_addr="127.0.0.1:1",
        started_at=now,
    )
    pg_store.end_session(
        "3f1e0b6a-0000-4000-8000-000000000001",
        ended_at=now,
        bytes_from_client=10,
        bytes_to_client=20,
        statements=1,
        end_reason="client_terminated",
    )
    session = pg_store.get_session("3f1e0b6a")
    assert session is not None
    assert session.statements == 1
    pg_store.revoke_token(info.token_id)
    with pytest.raises(AuthenticationError, match="revoked"):
        pg_store.authenticate(token)


def test_the_password_never_appears_in_errors(pg: ThrowawayPostgres) -> None:
    from sluice.errors import StoreError

    store = Store(f"postgresql://postgres:wrong-secret@127.0.0.1:{pg.port}/nope")
    with pytest.raises(StoreError) as info:
        store.migrate()
    assert "wrong-secret" not in str(info.value)
