"""Bad input gets a clear error in the client's protocol, and nothing else breaks."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import struct
import subprocess
import time

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.devservers.postgres import ThrowawayPostgres
from sluice.errors import StoreError
from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.framing import frame
from tests.helpers import GatewayThread


def connect_error(dsn: str) -> psycopg.OperationalError:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(dsn, connect_timeout=10).close()
    return info.value


def sqlstate_of(exc: psycopg.OperationalError) -> str | None:
    # libpq reports the server's FATAL through the connection error's text;
    # the SQLSTATE is checked with a raw connection below where it matters.
    return getattr(exc, "sqlstate", None)


class RawClient:
    """A hand-driven client socket, for the protocol's corners."""

    def __init__(self, port: int, *, tls: bool = True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.stream: socket.socket | ssl.SSLSocket = self.sock
        if tls:
            self.sock.sendall(m.encode_ssl_request())
            assert self.sock.recv(1) == b"S"
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.stream = ctx.wrap_socket(self.sock)

    def send(self, data: bytes) -> None:
        self.stream.sendall(data)

    def read_message(self) -> tuple[int, bytes]:
        header = self._exact(5)
        kind, length = struct.unpack("!cI", header)
        return kind[0], self._exact(length - 4)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.stream.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def login(self, user: str, token: str, dbname: str = "app") -> None:
        self.send(m.encode_startup({"user": user, "database": dbname}))
        kind, body = self.read_message()
        assert (kind, body) == (m.AUTHENTICATION, struct.pack("!i", m.AUTH_CLEARTEXT))
        self.send(m.encode_password(token))

    def until_ready(self) -> list[tuple[int, bytes]]:
        seen = []
        while True:
            kind, body = self.read_message()
            seen.append((kind, body))
            if kind == m.READY_FOR_QUERY:
                return seen

    def error_fields(self) -> dict[str, str]:
        kind, body = self.read_message()
        assert kind == m.ERROR_RESPONSE, chr(kind)
        return m.decode_fields(body)

    def closed(self) -> bool:
        try:
            return self.stream.recv(1) == b""
        except (ConnectionError, ssl.SSLError, OSError):
            return True

    def close(self) -> None:
        self.stream.close()


@pytest.fixture
def raw(gateway: GatewayThread) -> RawClient:
    return RawClient(gateway.port)


def test_unknown_token(gateway: GatewayThread, raw: RawClient) -> None:
    raw.login("alice", "slc_000000000000_nope")
    fields = raw.error_fields()
    assert fields["C"] == "28P01"
    assert fields["M"] == "unknown Sluice token"
    assert raw.closed()


def test_not_a_token(gateway: GatewayThread, raw: RawClient) -> None:
    raw.login("alice", "hunter2")
    fields = raw.error_fields()
    assert (fields["C"], fields["M"]) == ("28P01", "the password is not a Sluice token")


def test_revoked_token(gateway: GatewayThread, raw: RawClient) -> None:
    assert gateway.gateway is not None
    info, token = gateway.gateway.store.create_token(user="alice")
    gateway.gateway.store.revoke_token(info.token_id)
    raw.login("alice", token)
    fields = raw.error_fields()
    assert fields["C"] == "28P01"
    assert fields["M"] == f"Sluice token {info.token_id} was revoked"


def test_expired_token(gateway: GatewayThread, raw: RawClient) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    token = gateway.token(expires_at=past)
    raw.login("alice", token)
    fields = raw.error_fields()
    assert fields["C"] == "28P01"
    assert "expired" in fields["M"]


def test_token_of_another_user(gateway: GatewayThread, raw: RawClient) -> None:
    raw.login("mallory", gateway.token("alice"))
    fields = raw.error_fields()
    assert fields["C"] == "28P01"
    assert fields["M"] == "this token belongs to user 'alice', not 'mallory'"


def test_unknown_connection_names_the_allowed_ones(gateway: GatewayThread, raw: RawClient) -> None:
    raw.login("alice", gateway.token("alice", groups=("dev",)), dbname="nope")
    fields = raw.error_fields()
    assert fields["C"] == "3D000"
    assert "app, app-md5, app-plain, app-trust, down" in fields["H"]
    assert "ops-only" not in fields["H"]


def test_connection_of_another_group_is_refused(gateway: GatewayThread, raw: RawClient) -> None:
    raw.login("alice", gateway.token("alice", groups=("dev",)), dbname="ops-only")
    assert raw.error_fields()["C"] == "3D000"


def test_group_member_may_use_restricted_connection(gateway: GatewayThread) -> None:
    token = gateway.token("olga", groups=("ops",))
    with psycopg.connect(gateway.dsn(token, user="olga", dbname="ops-only")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_backend_down_fails_promptly(gateway: GatewayThread, raw: RawClient) -> None:
    started = time.monotonic()
    raw.login("alice", gateway.token(), dbname="down")
    fields = raw.error_fields()
    assert time.monotonic() - started < 3
    assert fields["C"] == "08001"
    assert "cannot reach the backend of connection 'down'" in fields["M"]


@pytest.mark.parametrize("conn", ["app", "app-md5", "app-plain", "app-trust"])
def test_every_backend_auth_method(gateway: GatewayThread, conn: str) -> None:
    expected = {
        "app": "app",
        "app-md5": "md5user",
        "app-plain": "plainuser",
        "app-trust": "trustuser",
    }[conn]
    with psycopg.connect(gateway.dsn(gateway.token(), dbname=conn)) as c:
        assert c.execute("SELECT current_user").fetchone() == (expected,)
        backend_ssl = c.execute(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert backend_ssl == ((conn != "app-md5"),)


def test_backend_password_never_reaches_the_client(gateway: GatewayThread) -> None:
    from tests.conftest import APP_PASSWORD

    token = gateway.token()
    result = subprocess.run(
        ["psql", "-X", gateway.dsn(token), "-c", "SHOW ALL", "-c", "\\conninfo"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert APP_PASSWORD not in result.stdout + result.stderr


def test_gssenc_is_refused_and_tls_follows(gateway: GatewayThread) -> None:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.sendall(struct.pack("!ii", 8, m.GSSENC_REQUEST_CODE))
    assert sock.recv(1) == b"N"
    sock.sendall(m.encode_ssl_request())
    assert sock.recv(1) == b"S"
    sock.close()


def test_replication_connections_are_refused(gateway: GatewayThread, raw: RawClient) -> None:
    raw.send(m.encode_startup({"user": "alice", "database": "app", "replication": "true"}))
    fields = raw.error_fields()
    assert fields["C"] == "28000"
    assert "replication" in fields["M"]


def test_garbage_startup_is_a_protocol_error(gateway: GatewayThread) -> None:
    client = RawClient(gateway.port, tls=False)
    client.send(struct.pack("!ii", 12, 1234) + b"zzzz")
    fields = client.error_fields()
    assert fields["C"] == "08P01"
    assert "unsupported frontend protocol" in fields["M"]


def test_oversized_startup_is_refused(gateway: GatewayThread) -> None:
    client = RawClient(gateway.port, tls=False)
    client.send(struct.pack("!i", 50_000_000))
    fields = client.error_fields()
    assert fields["C"] in ("08P01", "54000")
    assert "over the limit" in fields["M"]


def test_unknown_message_type_in_session(gateway: GatewayThread, raw: RawClient) -> None:
    raw.login("alice", gateway.token())
    raw.until_ready()
    raw.send(b"!" + struct.pack("!I", 4))
    fields = raw.error_fields()
    assert fields["C"] == "08P01"
    assert "unexpected message type '!'" in fields["M"]
    assert raw.closed()


def test_malformed_query_message(gateway: GatewayThread, raw: RawClient) -> None:
    raw.login("alice", gateway.token())
    raw.until_ready()
    raw.send(frame(b"Q", b"SELECT 1"))  # missing its terminator
    fields = raw.error_fields()
    assert fields["C"] == "08P01"
    assert raw.closed()


def test_oversized_message_in_session(gateway: GatewayThread, raw: RawClient) -> None:
    raw.login("alice", gateway.token())
    raw.until_ready()
    raw.send(b"Q" + struct.pack("!I", 500 * 1024 * 1024))
    fields = raw.error_fields()
    assert fields["C"] == "54000"
    assert "over the limit" in fields["M"]


def test_client_stalling_mid_message_is_dropped(gateway: GatewayThread, raw: RawClient) -> None:
    raw.login("alice", gateway.token())
    raw.until_ready()
    raw.send(b"Q" + struct.pack("!I", 100) + b"SELECT")
    fields = raw.error_fields()  # the test config's stall limit is 2 seconds
    assert fields["C"] == "08P01"
    assert "stalled" in fields["M"]


def test_auth_timeout(gateway: GatewayThread) -> None:
    client = RawClient(gateway.port, tls=False)
    client.send(m.encode_startup({"user": "alice", "database": "app"}))
    kind, _ = client.read_message()
    assert kind == m.AUTHENTICATION
    fields = client.error_fields()  # nothing more sent: the 5 s auth limit fires
    assert fields["C"] == "08006"
    assert "timed out" in fields["M"]


def test_vanishing_clients_do_not_disturb_others(gateway: GatewayThread) -> None:
    token = gateway.token()
    with psycopg.connect(gateway.dsn(token)) as steady:
        for _ in range(20):
            client = RawClient(gateway.port)
            client.login("alice", token)
            client.until_ready()
            client.send(b"Q" + struct.pack("!I", 1000) + b"SELECT")
            client.sock.close()
        for _ in range(5):
            half = socket.create_connection(("127.0.0.1", gateway.port))
            half.sendall(b"\x00\x00")
            half.close()
        assert steady.execute("SELECT 42").fetchone() == (42,)
    assert gateway.gateway is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        open_sessions = gateway.gateway.store.list_sessions(active_only=True)
        if not open_sessions:
            break
        time.sleep(0.1)
    assert open_sessions == []
    reasons = {s.end_reason for s in gateway.gateway.store.list_sessions(limit=30)}
    assert "client_disconnected" in reasons


def test_backend_killed_mid_session(gateway: GatewayThread) -> None:
    token = gateway.token()
    with (
        psycopg.connect(gateway.dsn(token), autocommit=True) as victim,
        psycopg.connect(gateway.dsn(token), autocommit=True) as killer,
    ):
        pid = victim.execute("SELECT pg_backend_pid()").fetchone()
        killer.execute("SELECT pg_terminate_backend(%s)", pid)
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        assert killer.execute("SELECT 'alive'").fetchone() == ("alive",)


def test_refused_clients_are_audited_without_the_token(gateway: GatewayThread) -> None:
    import json
    from pathlib import Path

    bad = "slc_000000000000_definitely-not-valid"
    client = RawClient(gateway.port)
    client.login("eve", bad)
    assert client.error_fields()["C"] == "28P01"
    wrong_db = RawClient(gateway.port)
    wrong_db.login("alice", gateway.token("alice"), dbname="ops-only")
    assert wrong_db.error_fields()["C"] == "3D000"
    audit = Path(gateway.config.data_dir) / "audit.jsonl"
    deadline = time.monotonic() + 5
    events: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        events = [json.loads(line) for line in audit.read_text().splitlines()]
        failed = [e for e in events if e["type"] == "auth.failed"]
        if len(failed) >= 2:
            break
        time.sleep(0.05)
    by_user = {e["claimed_user"]: e for e in failed}
    assert by_user["eve"]["sqlstate"] == "28P01"
    assert by_user["eve"]["identity"] is None
    assert by_user["alice"]["sqlstate"] == "3D000"
    assert by_user["alice"]["identity"]["user"] == "alice"  # type: ignore[index]
    assert bad not in audit.read_text()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.binary(min_size=1, max_size=300))
def test_garbage_after_login_never_breaks_the_gateway(
    gateway: GatewayThread, garbage: bytes
) -> None:
    """Any bytes a client sends get an error or a closed connection, nothing else."""
    token = _fuzz_token(gateway)
    client = RawClient(gateway.port)
    client.login("alice", token)
    client.until_ready()
    client.send(garbage)
    client.stream.settimeout(0.5)  # an incomplete frame just waits for its rest
    try:
        while True:
            kind, body = client.read_message()
            if kind == m.ERROR_RESPONSE:
                assert m.decode_fields(body)["C"] in (
                    "08P01",
                    "54000",
                    "42601",
                    "08006",
                    "XX000",
                    "22021",
                    "0A000",
                    "26000",
                    "34000",
                    "42P05",
                    "08004",
                    "57014",
                )
            if kind == m.READY_FOR_QUERY:
                break
    except (ConnectionError, OSError, ssl.SSLError, struct.error):
        pass
    finally:
        client.close()
    with psycopg.connect(gateway.dsn(token)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


_TOKENS: dict[int, str] = {}


def _fuzz_token(gateway: GatewayThread) -> str:
    if gateway.port not in _TOKENS:
        _TOKENS[gateway.port] = gateway.token()
    return _TOKENS[gateway.port]


def test_a_session_the_store_cannot_record_is_refused_and_its_backend_closed(
    gateway: GatewayThread, raw: RawClient, pg: ThrowawayPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend is connected while the store records the session; if the
    store fails, the client gets 58030 and that backend session is closed."""
    from tests.conftest import APP_PASSWORD

    assert gateway.gateway is not None
    store = gateway.gateway.store
    token = gateway.token()

    def store_down(**_: object) -> None:
        raise StoreError("store error: the database is locked")

    monkeypatch.setattr(store, "start_session", store_down)
    raw.login("alice", token)
    fields = raw.error_fields()
    assert fields["C"] == "58030"
    assert "cannot record this session" in fields["M"]
    monkeypatch.undo()
    direct = pg.dsn(user="app", password=APP_PASSWORD, dbname="app")
    with psycopg.connect(direct, autocommit=True) as check:
        deadline = time.monotonic() + 10
        while True:
            row = check.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE usename = 'app' AND pid <> pg_backend_pid()"
            ).fetchone()
            if row == (0,) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert row == (0,)
    with psycopg.connect(gateway.dsn(token)) as conn:  # the next session is recorded
        assert conn.execute("SELECT 1").fetchone() == (1,)
