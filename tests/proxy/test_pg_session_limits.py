"""Session caps: `limits.max_sessions` and `limits.max_sessions_per_user`, and
the default cap the open-file limit sets. psycopg and a hand-driven client
against a real gateway and PostgreSQL."""

from __future__ import annotations

import json
import resource
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sluice.devservers.postgres import ThrowawayPostgres
from sluice.protocols.postgres import messages as m
from sluice.proxy.pg_listener import FILES_PER_SESSION, FILES_RESERVED, session_capacity
from tests.conftest import base_config
from tests.helpers import GatewayThread
from tests.proxy.test_pg_errors import RawClient


@pytest.fixture(scope="module")
def capped(
    pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    config = base_config(
        pg,
        tmp_path_factory.mktemp("capped"),
        limits={
            "message_stall_timeout": 2,
            "auth_timeout": 5,
            "max_sessions": 3,
            "max_sessions_per_user": 2,
        },
    )
    thread = GatewayThread(config).start()
    yield thread
    thread.stop()


def _refusals(gateway: GatewayThread, count: int) -> list[dict[str, object]]:
    audit = Path(gateway.config.data_dir) / "audit.jsonl"
    deadline = time.monotonic() + 5
    refused: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        events = [json.loads(line) for line in audit.read_text().splitlines()]
        refused = [e for e in events if e["type"] == "auth.failed" and e["sqlstate"] == "53300"]
        if len(refused) >= count:
            break
        time.sleep(0.05)
    return refused


def _refusal(gateway: GatewayThread, user: str, token: str) -> dict[str, str]:
    """The FATAL error a client gets, by hand: libpq hides a refusal's SQLSTATE."""
    client = RawClient(gateway.port)
    try:
        client.send(m.encode_startup({"user": user, "database": "app"}))
        kind, body = client.read_message()
        if kind == m.AUTHENTICATION:  # a user's cap is checked once the token is known
            client.send(m.encode_password(token))
            kind, body = client.read_message()
        assert kind == m.ERROR_RESPONSE, chr(kind)
        assert client.closed()
        return m.decode_fields(body)
    finally:
        client.close()


def _connect_when_free(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    """Connect, waiting while the gateway lets go of closed clients' slots."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return psycopg.connect(dsn)
        except psycopg.OperationalError as exc:
            # libpq keeps a refusal's SQLSTATE to itself: its message tells
            at_cap = "maximum of" in str(exc) or "sessions through the gateway" in str(exc)
            if not at_cap or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_one_user_past_its_cap_is_refused_and_others_still_get_in(capped: GatewayThread) -> None:
    alice, bob = capped.token("alice"), capped.token("bob")
    first = _connect_when_free(capped.dsn(alice))
    second = _connect_when_free(capped.dsn(alice))
    try:
        with pytest.raises(psycopg.OperationalError, match="'alice' already has 2 sessions"):
            psycopg.connect(capped.dsn(alice))
        refused = _refusal(capped, "alice", alice)
        assert refused["C"] == "53300"
        assert refused["S"] == "FATAL"
        assert "max_sessions_per_user" in refused["H"]
        # another user still gets in, and alice's sessions keep working
        with psycopg.connect(capped.dsn(bob, user="bob")) as other:
            assert other.execute("SELECT 1").fetchone() == (1,)
        assert first.execute("SELECT 2").fetchone() == (2,)
    finally:
        first.close()
        second.close()
    with _connect_when_free(capped.dsn(alice)) as again:  # her slots came back
        assert again.execute("SELECT 3").fetchone() == (3,)
    refusal = _refusals(capped, 1)[0]
    assert refusal["claimed_user"] == "alice"
    assert refusal["identity"]["user"] == "alice"  # type: ignore[index]


def test_past_the_gateway_cap_clients_are_refused_until_a_slot_frees(
    capped: GatewayThread,
) -> None:
    tokens = {user: capped.token(user) for user in ("carol", "dave", "erin", "frank")}
    held = [_connect_when_free(capped.dsn(tokens[u], user=u)) for u in ("carol", "dave", "erin")]
    try:
        with pytest.raises(psycopg.OperationalError, match="maximum of 3 sessions"):
            psycopg.connect(capped.dsn(tokens["frank"], user="frank"))
        refused = _refusal(capped, "frank", tokens["frank"])
        assert refused["C"] == "53300"
        assert "limits.max_sessions" in refused["H"]
        held.pop().close()
        with _connect_when_free(capped.dsn(tokens["frank"], user="frank")) as late:
            assert late.execute("SELECT 1").fetchone() == (1,)
    finally:
        for conn in held:
            conn.close()
    refused_events = _refusals(capped, 1)
    assert any(e["claimed_user"] == "frank" and e["identity"] is None for e in refused_events)


def test_a_cancel_request_is_served_at_the_cap(capped: GatewayThread) -> None:
    """Cancelling a runaway query is what an operator needs most when the
    gateway is full: cancel requests never count against the cap."""
    users = ("gina", "hank", "ivan")
    tokens = {user: capped.token(user) for user in users}
    held = [_connect_when_free(capped.dsn(tokens[u], user=u)) for u in users]
    try:
        slow = held[0]
        failure: list[BaseException] = []

        def run() -> None:
            try:
                slow.execute("SELECT pg_sleep(30)")
            except BaseException as exc:
                failure.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(0.5)
        # cancel_safe: libpq polled from Python; the legacy blocking cancel would
        # hold the interpreter that also runs this in-process gateway.
        slow.cancel_safe()
        worker.join(10)
        assert not worker.is_alive()
        assert len(failure) == 1
        assert isinstance(failure[0], psycopg.errors.QueryCanceled)
    finally:
        for conn in held:
            conn.close()


def test_the_default_cap_is_what_the_open_file_limit_leaves_room_for() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        assert session_capacity() == (1024 - FILES_RESERVED) // FILES_PER_SESSION
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
