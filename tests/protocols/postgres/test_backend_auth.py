"""BackendHandshake driven by a simulated server, with a real SCRAM server (scramp)."""

from __future__ import annotations

import struct

import pytest
from scramp import ScramException, ScramMechanism

from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.backend_auth import (
    BackendAuthError,
    BackendHandshake,
    md5_password,
)
from sluice.protocols.postgres.errors import RemoteProtocolError
from sluice.protocols.postgres.framing import FrameBuffer

R = ord("R")


def split(data: bytes) -> list[tuple[int, bytes]]:
    buf = FrameBuffer(max_message=1 << 16)
    buf.feed(data)
    frames = list(buf.frames())
    assert buf.pending == 0
    return frames


def auth(code: int, payload: bytes = b"") -> bytes:
    return struct.pack("!i", code) + payload


def finish(hs: BackendHandshake) -> None:
    """The server's usual tail after AuthenticationOk."""
    assert hs.handle(R, auth(m.AUTH_OK)) == b""
    assert hs.handle(ord("S"), b"server_version\x0016.4\x00") == b""
    assert hs.handle(ord("S"), b"client_encoding\x00UTF8\x00") == b""
    assert hs.handle(ord("K"), b"\x00\x00\x30\x39\x00\x00\x00\x07") == b""
    assert not hs.done
    assert hs.handle(ord("Z"), b"I") == b""
    assert hs.done
    assert hs.parameters == {"server_version": "16.4", "client_encoding": "UTF8"}
    assert hs.key == m.BackendKeyData(process_id=12345, secret_key=7)
    assert hs.transaction_status == "I"


def test_startup_packet() -> None:
    hs = BackendHandshake(user="alice", password=None, parameters={"database": "db"})
    assert hs.startup == (
        b"\x00\x00\x00\x20\x00\x03\x00\x00user\x00alice\x00database\x00db\x00\x00"
    )


def test_trust() -> None:
    hs = BackendHandshake(user="alice", password=None, parameters={"database": "db"})
    finish(hs)
    assert hs.auth_method == "trust"


def test_cleartext_password() -> None:
    hs = BackendHandshake(user="alice", password="s3cret", parameters={})
    out = hs.handle(R, auth(m.AUTH_CLEARTEXT))
    assert out == b"p\x00\x00\x00\x0bs3cret\x00"
    assert hs.auth_method == "password"
    finish(hs)


def test_md5_password_against_hand_computed_value() -> None:
    # concat('md5', md5(concat(md5(concat(password, username)), salt))), computed
    # outside Python with `md5sum`:
    #   md5("secretalice") = 4a0a68b43b6cd5cf266fa02f196e2371
    #   md5("4a0a68b43b6cd5cf266fa02f196e2371" || 01 02 03 04)
    #     = 98a0412b9c31436fc53776e863350083
    expected = "md598a0412b9c31436fc53776e863350083"
    assert md5_password("alice", "secret", b"\x01\x02\x03\x04") == expected
    hs = BackendHandshake(user="alice", password="secret", parameters={})
    out = hs.handle(R, auth(m.AUTH_MD5, b"\x01\x02\x03\x04"))
    assert out == b"p\x00\x00\x00\x28" + expected.encode() + b"\x00"
    assert hs.auth_method == "md5"
    finish(hs)


def test_md5_salt_must_be_four_bytes() -> None:
    hs = BackendHandshake(user="alice", password="secret", parameters={})
    with pytest.raises(RemoteProtocolError, match="salt"):
        hs.handle(R, auth(m.AUTH_MD5, b"\x01\x02\x03"))


@pytest.mark.parametrize(
    ("code", "payload", "method"),
    [
        (m.AUTH_CLEARTEXT, b"", "password"),
        (m.AUTH_MD5, b"salt", "md5"),
        (m.AUTH_SASL, b"SCRAM-SHA-256\x00\x00", "SCRAM-SHA-256"),
    ],
)
def test_password_needed_but_not_configured(code: int, payload: bytes, method: str) -> None:
    hs = BackendHandshake(user="alice", password=None, parameters={})
    with pytest.raises(BackendAuthError, match=f"asks for {method} authentication") as info:
        hs.handle(R, auth(code, payload))
    assert "no password configured" in str(info.value)


class ScramServer:
    """The server side of SCRAM-SHA-256, as PostgreSQL runs it, with scramp."""

    def __init__(self, password: str):
        self.mechanism = ScramMechanism("SCRAM-SHA-256")
        self.auth_info = self.mechanism.make_auth_info(password, iteration_count=4096)
        self.server = self.mechanism.make_server(lambda _username: self.auth_info)


def scram_exchange(client_password: str, server_password: str) -> tuple[BackendHandshake, bytes]:
    hs = BackendHandshake(user="alice", password=client_password, parameters={})
    srv = ScramServer(server_password).server

    out = hs.handle(R, auth(m.AUTH_SASL, b"SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"))
    [(kind, body)] = split(out)
    assert kind == ord("p")
    mechanism, _, rest = body.partition(b"\x00")
    assert mechanism == b"SCRAM-SHA-256"
    (length,) = struct.unpack("!i", rest[:4])
    client_first = rest[4:]
    assert length == len(client_first)
    assert client_first.startswith(b"n,,")  # no channel binding
    assert hs.auth_method == "scram-sha-256"

    srv.set_client_first(client_first.decode())
    out = hs.handle(R, auth(m.AUTH_SASL_CONTINUE, srv.get_server_first().encode()))
    [(kind, client_final)] = split(out)
    assert kind == ord("p")
    srv.set_client_final(client_final.decode())  # raises when the proof is wrong
    return hs, srv.get_server_final().encode()


def test_scram_sha_256_end_to_end_with_real_server() -> None:
    hs, server_final = scram_exchange("correct horse", "correct horse")
    assert hs.handle(R, auth(m.AUTH_SASL_FINAL, server_final)) == b""
    finish(hs)
    assert hs.auth_method == "scram-sha-256"


def test_scram_wrong_password_is_refused_by_the_server() -> None:
    with pytest.raises(ScramException):
        scram_exchange("wrong", "correct horse")


def test_scram_server_signature_is_verified() -> None:
    hs, server_final = scram_exchange("pw", "pw")
    tampered = server_final[:-4] + (b"AAAA" if not server_final.endswith(b"AAAA") else b"BBBB")
    with pytest.raises(BackendAuthError, match="did not verify"):
        hs.handle(R, auth(m.AUTH_SASL_FINAL, tampered))


def test_scram_server_signature_from_another_password_is_refused() -> None:
    hs, _ = scram_exchange("pw", "pw")
    _, other_final = scram_exchange("other", "other")
    with pytest.raises(BackendAuthError, match="did not verify"):
        hs.handle(R, auth(m.AUTH_SASL_FINAL, other_final))


def test_authentication_ok_without_sasl_final_is_refused() -> None:
    # A backend that skips SASLFinal never proves it knows the password.
    hs, _ = scram_exchange("pw", "pw")
    with pytest.raises(BackendAuthError, match="without proving"):
        hs.handle(R, auth(m.AUTH_OK))


def test_scram_garbage_server_first() -> None:
    hs = BackendHandshake(user="alice", password="pw", parameters={})
    hs.handle(R, auth(m.AUTH_SASL, b"SCRAM-SHA-256\x00\x00"))
    with pytest.raises(BackendAuthError, match="SCRAM exchange with the backend failed"):
        hs.handle(R, auth(m.AUTH_SASL_CONTINUE, b"garbage"))
    hs = BackendHandshake(user="alice", password="pw", parameters={})
    hs.handle(R, auth(m.AUTH_SASL, b"SCRAM-SHA-256\x00\x00"))
    with pytest.raises(BackendAuthError):
        hs.handle(R, auth(m.AUTH_SASL_CONTINUE, b"\xff\xfe"))


def test_sasl_steps_out_of_order() -> None:
    hs = BackendHandshake(user="alice", password="pw", parameters={})
    with pytest.raises(RemoteProtocolError, match="SASLContinue before SASL"):
        hs.handle(R, auth(m.AUTH_SASL_CONTINUE, b"r=x"))
    with pytest.raises(RemoteProtocolError, match="SASLFinal before SASL"):
        hs.handle(R, auth(m.AUTH_SASL_FINAL, b"v=x"))


def test_sasl_without_scram_sha_256() -> None:
    hs = BackendHandshake(user="alice", password="pw", parameters={})
    with pytest.raises(BackendAuthError, match="supports SCRAM-SHA-256") as info:
        hs.handle(R, auth(m.AUTH_SASL, b"SCRAM-SHA-256-PLUS\x00\x00"))
    assert "SCRAM-SHA-256-PLUS" in str(info.value)


@pytest.mark.parametrize(("code", "name"), [(2, "Kerberos"), (7, "GSS"), (9, "SSPI"), (99, "?")])
def test_unsupported_method_gives_a_clear_error(code: int, name: str) -> None:
    hs = BackendHandshake(user="alice", password="pw", parameters={})
    with pytest.raises(BackendAuthError, match=f"method {code}, which the gateway") as info:
        hs.handle(R, auth(code))
    assert "trust, password, md5 or scram-sha-256" in str(info.value), name
    assert info.value.sqlstate == "08001"


def test_error_response_during_auth_carries_fields() -> None:
    hs = BackendHandshake(user="alice", password="bad", parameters={})
    hs.handle(R, auth(m.AUTH_CLEARTEXT))
    body = b'SFATAL\x00VFATAL\x00C28P01\x00Mpassword authentication failed for user "alice"\x00\x00'
    with pytest.raises(BackendAuthError, match="refused the connection: password auth") as info:
        hs.handle(ord("E"), body)
    assert info.value.fields == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "28P01",
        "M": 'password authentication failed for user "alice"',
    }
    assert isinstance(info.value, RemoteProtocolError)


def test_error_response_without_message() -> None:
    hs = BackendHandshake(user="alice", password=None, parameters={})
    with pytest.raises(BackendAuthError, match="no message") as info:
        hs.handle(ord("E"), b"C53300\x00\x00")
    assert info.value.fields == {"C": "53300"}


def test_notices_and_negotiate_protocol_version_pass() -> None:
    hs = BackendHandshake(user="alice", password=None, parameters={})
    notice = b"SWARNING\x00Mhi\x00\x00"
    assert hs.handle(ord("N"), notice) == b""
    assert hs.notices == [b"N\x00\x00\x00\x12" + notice]
    assert hs.handle(ord("v"), b"\x00\x00\x00\x00\x00\x00\x00\x00") == b""
    finish(hs)


def test_unexpected_message_and_message_after_ready() -> None:
    hs = BackendHandshake(user="alice", password=None, parameters={})
    with pytest.raises(RemoteProtocolError, match="unexpected message 'D'"):
        hs.handle(ord("D"), b"\x00\x00")
    hs = BackendHandshake(user="alice", password=None, parameters={})
    finish(hs)
    with pytest.raises(RemoteProtocolError, match="after ReadyForQuery"):
        hs.handle(ord("Z"), b"I")


def test_malformed_bodies_raise_protocol_errors() -> None:
    hs = BackendHandshake(user="alice", password=None, parameters={})
    with pytest.raises(RemoteProtocolError):
        hs.handle(R, b"\x00\x00")
    with pytest.raises(RemoteProtocolError):
        hs.handle(ord("S"), b"no terminator")
    with pytest.raises(RemoteProtocolError):
        hs.handle(ord("K"), b"\x00")


@pytest.mark.parametrize("password", ["pw\x00x", "\u0627a", "pass\u00adword", "I\u2168"])
def test_saslprep_follows_libpq(password: str) -> None:
    """Passwords SASLprep maps are normalised; ones it refuses are used raw, as libpq does."""
    from sluice.protocols.postgres.scram import _saslprep

    prepared = _saslprep(password)
    expected = {
        "pw\x00x": "pw\x00x",
        "\u0627a": "\u0627a",
        "pass\u00adword": "password",
        "I\u2168": "IIX",
    }[password]
    assert prepared == expected
    hs = BackendHandshake(user="alice", password=password, parameters={})
    first = hs.handle(R, auth(m.AUTH_SASL, b"SCRAM-SHA-256\x00\x00"))
    assert b"n=alice,r=" in first
