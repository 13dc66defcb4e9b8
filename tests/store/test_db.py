"""The store on SQLite in a temporary directory: migrations, tokens, sessions, credentials."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, update

from sluice.errors import AuthenticationError, StoreError
from sluice.events import Identity
from sluice.identity.tokens import hash_token
from sluice.store.db import LAST_USED_PRECISION, SessionInfo, Store, TokenInfo, utcnow
from sluice.store.models import TokenRow


def db_bytes(directory: Path) -> bytes:
    """Everything SQLite wrote: the database file and its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob("sluice.db*")))


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(db_dir: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{db_dir / 'sluice.db'}")
    s.migrate()
    yield s
    s.close()


def test_store_creates_its_directory_and_tables(db_dir: Path, store: Store) -> None:
    assert (db_dir / "sluice.db").exists()
    tables = set(inspect(store.engine).get_table_names())
    assert {"tokens", "sessions", "credentials", "approvals", "alembic_version"} <= tables


def test_migrations_are_idempotent(db_dir: Path, store: Store) -> None:
    store.create_token(user="alice")
    store.migrate()
    store.migrate()
    again = Store(store.url)
    again.migrate()
    assert [t.user for t in again.list_tokens()] == ["alice"]
    again.close()
    with sqlite3.connect(db_dir / "sluice.db") as conn:
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert len(versions) == 1


def test_sqlite_runs_in_wal_mode(store: Store) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot open the store"):
        Store("notadriver://x")


def test_unmigratable_store_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-db"
    path.write_bytes(b"this is not sqlite" * 100)
    s = Store(f"sqlite:///{path}")
    with pytest.raises(StoreError):
        s.migrate()
    s.close()


# Tokens


def test_token_plaintext_is_never_stored(db_dir: Path, store: Store) -> None:
    info, plaintext = store.create_token(user="alice", groups=["dba"], description="laptop")
    assert plaintext.startswith(f"slc_{info.token_id}_")
    secret = plaintext.split("_", 2)[2]
    store.authenticate(plaintext)
    store.close()
    raw = db_bytes(db_dir)
    assert hash_token(plaintext).encode() in raw  # we are looking at the right bytes
    assert info.token_id.encode() in raw
    assert plaintext.encode() not in raw
    assert secret.encode() not in raw


def test_create_and_list_tokens(store: Store) -> None:
    expires = utcnow() + dt.timedelta(days=1)
    info, _ = store.create_token(
        user="alice", groups=["dba", "dev"], description="d", expires_at=expires
    )
    assert info.user == "alice"
    assert info.groups == ("dba", "dev")
    assert info.description == "d"
    assert info.status == "active"
    assert info.expires_at == expires
    store.create_token(user="bob")
    listed = store.list_tokens()
    assert [t.user for t in listed] == ["alice", "bob"]
    assert all(isinstance(t, TokenInfo) for t in listed)
    assert listed[0].expires_at is not None
    assert listed[0].expires_at.tzinfo is not None  # SQLite's naive values come back as UTC


def test_authenticate_returns_identity_and_marks_use(store: Store) -> None:
    info, plaintext = store.create_token(user="alice", groups=["dba"])
    assert info.last_used_at is None
    identity, found = store.authenticate(plaintext)
    assert identity == Identity(user="alice", groups=("dba",), token_id=info.token_id)
    assert found.token_id == info.token_id
    [listed] = store.list_tokens()
    assert listed.last_used_at is not None


def test_authenticate_writes_last_used_at_most_once_a_minute(store: Store) -> None:
    _info, plaintext = store.create_token(user="alice")
    store.authenticate(plaintext)
    [first] = store.list_tokens()
    store.authenticate(plaintext)
    [second] = store.list_tokens()
    assert second.last_used_at == first.last_used_at  # within the minute: no write
    assert first.last_used_at is not None
    stale = first.last_used_at - LAST_USED_PRECISION - dt.timedelta(seconds=1)
    with store.engine.begin() as conn:
        conn.execute(update(TokenRow).values(last_used_at=stale))
    store.authenticate(plaintext)
    [third] = store.list_tokens()
    assert third.last_used_at is not None
    assert third.last_used_at > first.last_used_at


def test_store_threads_one_for_sqlite(store: Store) -> None:
    assert store.writer_threads == 1  # one writer at a time: more threads only contend


@pytest.mark.parametrize("password", ["", "hunter2", "slc_", "slc_short_x", "slc_0123456789ab_"])
def test_authenticate_not_a_token(store: Store, password: str) -> None:
    with pytest.raises(AuthenticationError, match="not a Sluice token") as info:
        store.authenticate(password)
    assert info.value.hint is not None
    assert info.value.sqlstate == "28P01"


def test_authenticate_unknown_token(store: Store) -> None:
    _, plaintext = store.create_token(user="alice")
    forged = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    with pytest.raises(AuthenticationError, match="unknown Sluice token") as info:
        store.authenticate(forged)
    assert "sluice tokens create" in (info.value.hint or "")


def test_authenticate_revoked_token(store: Store) -> None:
    info, plaintext = store.create_token(user="alice")
    revoked = store.revoke_token(info.token_id)
    assert revoked is not None
    assert revoked.status == "revoked"
    with pytest.raises(AuthenticationError, match=f"token {info.token_id} was revoked"):
        store.authenticate(plaintext)
    [listed] = store.list_tokens()
    assert listed.status == "revoked"
    assert store.list_tokens(include_inactive=False) == []


def test_revoke_is_idempotent_and_unknown_is_none(store: Store) -> None:
    info, _ = store.create_token(user="alice")
    first = store.revoke_token(info.token_id)
    second = store.revoke_token(info.token_id)
    assert first is not None
    assert second is not None
    assert first.revoked_at == second.revoked_at
    assert store.revoke_token("000000000000") is None


def test_authenticate_expired_token(store: Store) -> None:
    info, plaintext = store.create_token(
        user="alice", expires_at=dt.datetime(2020, 1, 2, 3, 4, tzinfo=dt.UTC)
    )
    assert info.status == "expired"
    with pytest.raises(AuthenticationError) as err:
        store.authenticate(plaintext)
    assert str(err.value) == f"Sluice token {info.token_id} expired at 2020-01-02 03:04 UTC"
    assert err.value.hint == "ask for a new token"
    assert store.list_tokens(include_inactive=False) == []


def test_token_hash_is_unique(store: Store) -> None:
    store.create_token(user="a")
    with store.transaction() as s:
        rows = s.scalars(select(TokenRow)).all()
        assert len(rows) == 1
        assert len(rows[0].secret_hash) == 64


# Sessions


def start(
    store: Store,
    session_id: str,
    *,
    user: str = "alice",
    connection: str = "prod",
    minutes_ago: int = 0,
) -> None:
    store.start_session(
        session_id=session_id,
        identity=Identity(user=user, groups=("dba",)),
        connection=connection,
        protocol="postgres",
        client_addr="127.0.0.1:50000",
        started_at=utcnow() - dt.timedelta(minutes=minutes_ago),
    )


def test_session_start_end_get(store: Store) -> None:
    start(store, "3f2a9c1e-0000-4000-8000-000000000001")
    info = store.get_session("3f2a9c1e-0000-4000-8000-000000000001")
    assert isinstance(info, SessionInfo)
    assert (info.user, info.groups, info.connection) == ("alice", ("dba",), "prod")
    assert info.ended_at is None
    assert (info.bytes_from_client, info.bytes_to_client, info.statements) == (0, 0, 0)
    ended = utcnow()
    store.end_session(
        "3f2a9c1e-0000-4000-8000-000000000001",
        ended_at=ended,
        bytes_from_client=10,
        bytes_to_client=2000,
        statements=3,
        end_reason="client_terminated",
        end_detail="bye",
    )
    info = store.get_session("3f2a9c1e-0000-4000-8000-000000000001")
    assert info is not None
    assert info.ended_at == ended
    assert (info.bytes_from_client, info.bytes_to_client, info.statements) == (10, 2000, 3)
    assert (info.end_reason, info.end_detail) == ("client_terminated", "bye")
    data = info.as_json()
    assert data["id"] == "3f2a9c1e-0000-4000-8000-000000000001"
    assert data["ended_at"] == ended.isoformat()
    assert data["groups"] == ["dba"]


def test_get_session_by_prefix(store: Store) -> None:
    start(store, "aaaa1111-x")
    start(store, "aaaa2222-x")
    start(store, "bbbb1111-x")
    found = store.get_session("bbbb")
    assert found is not None
    assert found.session_id == "bbbb1111-x"
    assert store.get_session("aaaa1") is not None
    assert store.get_session("aaaa") is None  # ambiguous
    assert store.get_session("cccc") is None
    assert store.get_session("") is None


def test_session_prefix_wildcards_are_literal(store: Store) -> None:
    start(store, "only-session")
    assert store.get_session("%") is None
    assert store.get_session("_nly") is None
    assert store.get_session("only-") is not None


def test_list_sessions_filters_and_order(store: Store) -> None:
    start(store, "s-old", minutes_ago=30)
    start(store, "s-new", minutes_ago=1)
    start(store, "s-bob", user="bob", connection="analytics", minutes_ago=10)
    store.end_session(
        "s-old",
        ended_at=utcnow(),
        bytes_from_client=0,
        bytes_to_client=0,
        statements=0,
        end_reason="done",
    )
    assert [s.session_id for s in store.list_sessions()] == ["s-new", "s-bob", "s-old"]
    assert [s.session_id for s in store.list_sessions(limit=1)] == ["s-new"]
    assert [s.session_id for s in store.list_sessions(user="bob")] == ["s-bob"]
    assert [s.session_id for s in store.list_sessions(connection="prod")] == ["s-new", "s-old"]
    assert [s.session_id for s in store.list_sessions(active_only=True)] == ["s-new", "s-bob"]


def test_delete_sessions_before(store: Store) -> None:
    start(store, "ended-long-ago", minutes_ago=120)
    start(store, "still-open", minutes_ago=120)
    store.end_session(
        "ended-long-ago",
        ended_at=utcnow() - dt.timedelta(minutes=90),
        bytes_from_client=0,
        bytes_to_client=0,
        statements=0,
        end_reason="x",
    )
    assert store.delete_sessions_before(utcnow() - dt.timedelta(minutes=100)) == []
    assert store.delete_sessions_before(utcnow()) == ["ended-long-ago"]
    assert [s.session_id for s in store.list_sessions()] == ["still-open"]


def test_duplicate_session_id_is_a_store_error(store: Store) -> None:
    start(store, "dup")
    with pytest.raises(StoreError, match="store error"):
        start(store, "dup")


# Credentials


def test_credentials_put_get_list_delete(store: Store) -> None:
    assert store.get_credential("prod") is None
    store.put_credential("prod", b"cipher-1")
    store.put_credential("analytics", b"cipher-2")
    assert store.get_credential("prod") == b"cipher-1"
    listed = store.list_credentials()
    assert [name for name, _ in listed] == ["analytics", "prod"]
    assert all(updated.tzinfo is not None for _, updated in listed)
    store.put_credential("prod", b"cipher-3")
    assert store.get_credential("prod") == b"cipher-3"
    assert store.delete_credential("prod") is True
    assert store.delete_credential("prod") is False
    assert store.get_credential("prod") is None
