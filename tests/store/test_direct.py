"""The per-session store calls on DB-API connections (sluice.store.direct):
the same rows as SQLAlchemy Core writes, errors that leave the store usable."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice.errors import AuthenticationError, StoreError
from sluice.events import Identity
from sluice.store.db import Store

STARTED = dt.datetime(2026, 12, 7, 5, 30, 1, 250_000, tzinfo=dt.UTC)
ENDED = STARTED + dt.timedelta(seconds=3, microseconds=17)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sluice.db'}"


@pytest.fixture
def direct(url: str) -> Iterator[Store]:
    store = Store(url)
    store.migrate()
    assert store._direct is not None  # a SQLite file: the direct calls
    yield store
    store.close()


@pytest.fixture
def core(url: str, direct: Store) -> Iterator[Store]:
    """The same database through SQLAlchemy Core, as other databases are used."""
    store = Store(url)
    store._direct = None
    yield store
    store.close()


def raw_rows(url: str, table: str) -> dict[str, tuple[Any, ...]]:
    """Each row as SQLite stores it (text, numbers), keyed by its id."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        rows = conn.execute(f"SELECT * FROM {table}").fetchall()
    return {row[0]: row[1:] for row in rows}


def session_life(store: Store, session_id: str) -> None:
    store.start_session(
        session_id=session_id,
        identity=Identity(user="agent-7", groups=("agents", "ops é")),
        connection="orders",
        protocol="postgres",
        client_addr="10.1.2.3",
        started_at=STARTED,
    )
    store.end_session(
        session_id,
        ended_at=ENDED,
        bytes_from_client=1234,
        bytes_to_client=2**40,
        statements=17,
        end_reason="client_terminated",
        end_detail='quote " and newline\n',
    )


def test_sessions_are_stored_exactly_as_core_stores_them(
    url: str, direct: Store, core: Store
) -> None:
    session_life(direct, "by-direct")
    session_life(core, "by-core")
    rows = raw_rows(url, "sessions")
    assert rows["by-direct"] == rows["by-core"]
    for store in (direct, core):
        found = store.get_session("by-direct")
        assert found is not None
        assert (found.started_at, found.ended_at) == (STARTED, ENDED)
        assert found.groups == ("agents", "ops é")
        assert found.bytes_to_client == 2**40
        assert found.end_detail == 'quote " and newline\n'


def test_authenticate_reads_and_marks_tokens_as_core_does(
    url: str, direct: Store, core: Store
) -> None:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    plaintexts = {}
    for name in ("by-direct", "by-core"):
        _, plaintexts[name] = direct.create_token(user=name, groups=["dba"], expires_at=expires)
    identity, info = direct.authenticate(plaintexts["by-direct"])
    core_identity, core_info = core.authenticate(plaintexts["by-core"])
    assert identity == Identity(user="by-direct", groups=("dba",), token_id=info.token_id)
    assert (info.expires_at, info.created_at.tzinfo) == (core_info.expires_at, dt.UTC)
    assert info.groups == core_info.groups == core_identity.groups
    # "last used" was written, in the same form, by both
    rows = raw_rows(url, "tokens")
    direct_used, core_used = rows[info.token_id][-1], rows[core_info.token_id][-1]
    assert direct_used is not None
    assert core_used is not None
    assert len(direct_used) == len(core_used)
    listed = {t.token_id: t for t in core.list_tokens()}
    used = listed[info.token_id].last_used_at
    assert used is not None
    assert abs(used - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    _, again = direct.authenticate(plaintexts["by-direct"])  # reads what it wrote
    assert again.last_used_at == used


def test_a_refused_token_leaves_the_connection_usable(direct: Store) -> None:
    info, plaintext = direct.create_token(user="alice")
    forged = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    with pytest.raises(AuthenticationError, match="unknown Sluice token"):
        direct.authenticate(forged)
    direct.revoke_token(info.token_id)
    with pytest.raises(AuthenticationError, match="was revoked"):
        direct.authenticate(plaintext)
    _, fresh = direct.create_token(user="bob")
    assert direct.authenticate(fresh)[0].user == "bob"


def test_a_database_error_is_a_store_error_and_the_next_call_works(url: str, direct: Store) -> None:
    session_life(direct, "dup")
    with pytest.raises(StoreError, match="store error: IntegrityError"):
        session_life(direct, "dup")  # the same id again: the insert fails
    session_life(direct, "after")
    assert set(raw_rows(url, "sessions")) == {"dup", "after"}


def test_a_locked_database_fails_the_call_not_the_store(
    url: str, direct: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process holds the write lock past the busy timeout.
    monkeypatch.setattr(direct._direct.connections, "_connect", _short_busy_timeout(direct))  # type: ignore[union-attr]
    blocker = sqlite3.connect(url.removeprefix("sqlite:///"))
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            session_life(direct, "blocked")
    finally:
        blocker.rollback()
        blocker.close()
    session_life(direct, "unblocked")
    assert set(raw_rows(url, "sessions")) == {"unblocked"}


def _short_busy_timeout(store: Store) -> Any:
    connections = store._direct.connections  # type: ignore[union-attr]
    connect = connections._connect

    def quick() -> Any:
        connection = connect()
        connection.cursor().execute("PRAGMA busy_timeout=50")
        return connection

    return quick


def test_each_thread_has_its_own_connection(url: str, direct: Store) -> None:
    errors: list[BaseException] = []

    def sessions(prefix: str) -> None:
        try:
            for i in range(20):
                session_life(direct, f"{prefix}-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sessions, args=(f"t{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(raw_rows(url, "sessions")) == 60


def test_a_closed_store_refuses_calls(direct: Store) -> None:
    session_life(direct, "before")
    direct.close()
    with pytest.raises(StoreError, match="closed"):
        session_life(direct, "after")


def test_sqlite_in_memory_keeps_core() -> None:
    store = Store("sqlite:///:memory:")
    try:
        assert store._direct is None  # one connection holds the tables: the pool's
    finally:
        store.close()


def test_a_forked_worker_opens_its_own_connection(url: str, direct: Store) -> None:
    """A SQLite connection must not be used on both sides of a fork: the
    child gets a copy of the parent's, whose locks and cache the parent owns."""
    session_life(direct, "parent-before")  # the parent's thread now holds a connection
    parent_connection = id(_held_connection(direct))
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_child_sessions, args=(direct, parent_connection))
    child.start()
    child.join(30)
    assert child.exitcode == 0  # 3: the child reused the parent's connection
    session_life(direct, "parent-after")
    assert id(_held_connection(direct)) == parent_connection
    assert set(raw_rows(url, "sessions")) == {"parent-before", "child", "parent-after"}


def _held_connection(store: Store) -> Any:
    assert store._direct is not None
    return store._direct.connections._local.connection


def _child_sessions(store: Store, parent_connection: int) -> None:
    # Held here, the inherited copy keeps its address: compared by id() after
    # it was dropped, a new connection made at the same address looked reused.
    inherited = _held_connection(store)
    if id(inherited) != parent_connection:
        raise SystemExit(4)
    store.after_fork()
    session_life(store, "child")
    reused = _held_connection(store) is inherited
    store.close()
    if reused:
        raise SystemExit(3)
