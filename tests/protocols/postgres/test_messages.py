"""Golden bytes both ways for every PostgreSQL message the codec decodes or encodes.

The expected bytes are written out by hand from "Message Formats" in the
PostgreSQL documentation (https://www.postgresql.org/docs/current/
protocol-message-formats.html), not produced by the code under test: each
golden is Byte1 type (none for startup packets), Int32 length counting itself,
then the fields in order, integers in network byte order.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.errors import RemoteProtocolError


def body_of(golden: bytes, kind: bytes) -> bytes:
    """The body of a typed golden message, after checking its header."""
    assert golden[:1] == kind
    (length,) = struct.unpack("!I", golden[1:5])
    assert length == len(golden) - 1, "the golden's own length field is wrong"
    return golden[5:]


def startup_body(golden: bytes) -> bytes:
    (length,) = struct.unpack("!I", golden[:4])
    assert length == len(golden)
    return golden[4:]


# Startup phase (untyped packets)

STARTUP = (
    b"\x00\x00\x00\x20"  # length 32
    b"\x00\x03\x00\x00"  # protocol 3.0 = 196608
    b"user\x00alice\x00"
    b"database\x00db\x00"
    b"\x00"  # terminator
)
SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"  # 80877103
GSSENC_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x30"  # 80877104
CANCEL_REQUEST = (
    b"\x00\x00\x00\x10"
    b"\x04\xd2\x16\x2e"  # 80877102
    b"\x00\x00\x30\x39"  # process id 12345
    b"\xde\xad\xbe\xef"  # secret key (signed: -559038737)
)


def test_startup_message_decode() -> None:
    msg = m.decode_startup(startup_body(STARTUP))
    assert msg == m.StartupMessage(protocol=196608, parameters={"user": "alice", "database": "db"})
    assert isinstance(msg, m.StartupMessage)
    assert msg.user == "alice"
    assert msg.database == "db"


def test_startup_message_encode() -> None:
    assert m.encode_startup({"user": "alice", "database": "db"}) == STARTUP


def test_startup_database_defaults_to_user() -> None:
    body = startup_body(m.encode_startup({"user": "bob"}))
    assert body == b"\x00\x03\x00\x00user\x00bob\x00\x00"
    msg = m.decode_startup(body)
    assert isinstance(msg, m.StartupMessage)
    assert msg.database == "bob"


def test_ssl_request_both_ways() -> None:
    assert m.decode_startup(startup_body(SSL_REQUEST)) == m.SSLRequest()
    assert m.encode_ssl_request() == SSL_REQUEST


def test_gssenc_request_decode() -> None:
    assert m.decode_startup(startup_body(GSSENC_REQUEST)) == m.GSSENCRequest()


def test_cancel_request_both_ways() -> None:
    assert m.decode_startup(startup_body(CANCEL_REQUEST)) == m.CancelRequest(
        process_id=12345, secret_key=-559038737
    )
    assert m.encode_cancel_request(12345, -559038737) == CANCEL_REQUEST


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\x00\x03", "too short"),
        (b"\x04\xd2\x16\x2e\x00\x00\x00\x01", "CancelRequest must be 16 bytes"),
        (b"\x00\x02\x00\x00user\x00a\x00\x00", "unsupported frontend protocol 2.0"),
        (b"\x04\xd2\x16\x2f\x00", "unsupported frontend protocol"),  # SSLRequest + junk
        (b"\x00\x03\x00\x00user\x00alice\x00", "missing its terminator"),
        (b"\x00\x03\x00\x00user\x00alice", "unterminated string"),
        (b"\x00\x03\x00\x00database\x00db\x00\x00", "no PostgreSQL user name"),
        (b"\x00\x03\x00\x00user\x00\x00\x00", "no PostgreSQL user name"),
        (b"\x00\x03\x00\x00user\x00\xff\x00\x00", "not valid UTF-8"),
    ],
)
def test_startup_rejects_malformed(body: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        m.decode_startup(body)


# Frontend messages

QUERY = b"Q\x00\x00\x00\x0dSELECT 1\x00"
PARSE = (
    b"P\x00\x00\x00\x19"
    b"stmt\x00"
    b"SELECT $1\x00"
    b"\x00\x01"  # one parameter type
    b"\x00\x00\x00\x17"  # int4 = oid 23
)
PARSE_NO_TYPES = b"P\x00\x00\x00\x10\x00SELECT 1\x00\x00\x00"
BIND = (
    b"B\x00\x00\x00\x22"
    b"p1\x00"  # portal
    b"s1\x00"  # statement
    b"\x00\x02\x00\x00\x00\x01"  # two parameter formats: text, binary
    b"\x00\x02"  # two parameters
    b"\xff\xff\xff\xff"  # first is NULL
    b"\x00\x00\x00\x04\x00\x00\x00\x2a"  # second: binary int4 42
    b"\x00\x01\x00\x01"  # one result format: binary for all columns
)
BIND_UNNAMED_TEXT = (
    b"B\x00\x00\x00\x12"
    b"\x00\x00"  # unnamed portal, unnamed statement
    b"\x00\x00"  # no parameter formats (all text)
    b"\x00\x01"  # one parameter
    b"\x00\x00\x00\x02hi"  # text 'hi'
    b"\x00\x00"  # no result formats
)
EXECUTE = b"E\x00\x00\x00\x0bp1\x00\x00\x00\x00\x00"
EXECUTE_LIMIT = b"E\x00\x00\x00\x09\x00\x00\x00\x00\x64"  # unnamed portal, 100 rows
DESCRIBE_STATEMENT = b"D\x00\x00\x00\x08Ss1\x00"
DESCRIBE_PORTAL = b"D\x00\x00\x00\x06P\x00"
CLOSE_PORTAL = b"C\x00\x00\x00\x08Pp1\x00"
CLOSE_STATEMENT = b"C\x00\x00\x00\x08Ss1\x00"
PASSWORD = b"p\x00\x00\x00\x0bsecret\x00"
SASL_INITIAL = (
    b"p\x00\x00\x00\x1f"
    b"SCRAM-SHA-256\x00"
    b"\x00\x00\x00\x09"  # length of the initial response
    b"n,,n=,r=x"
)
SASL_INITIAL_EMPTY = b"p\x00\x00\x00\x0ePLAIN\x00\x00\x00\x00\x00"
SASL_RESPONSE = b"p\x00\x00\x00\x0ac=biws"
TERMINATE = b"X\x00\x00\x00\x04"


def test_query_both_ways() -> None:
    assert m.decode_query(body_of(QUERY, b"Q")) == m.Query(sql="SELECT 1")
    assert m.encode_query("SELECT 1") == QUERY


def test_query_unicode() -> None:
    golden = b"Q\x00\x00\x00\x10SELECT '\xc3\xa9'\x00"
    assert m.decode_query(body_of(golden, b"Q")).sql == "SELECT 'é'"
    assert m.encode_query("SELECT 'é'") == golden


def test_parse_decode() -> None:
    assert m.decode_parse(body_of(PARSE, b"P")) == m.Parse(
        name="stmt", sql="SELECT $1", param_types=(23,)
    )
    assert m.decode_parse(body_of(PARSE_NO_TYPES, b"P")) == m.Parse(
        name="", sql="SELECT 1", param_types=()
    )


def test_parse_with_more_than_32767_parameter_types() -> None:
    # The server reads the count as unsigned; libpq sends up to 65535 parameters.
    count = 40_000
    body = b"\x00SELECT 1\x00" + struct.pack("!H", count) + b"\x00\x00\x00\x19" * count
    assert m.decode_parse(body).param_types == (25,) * count


def test_bind_decode_with_formats_null_and_binary() -> None:
    assert m.decode_bind(body_of(BIND, b"B")) == m.Bind(
        portal="p1", statement="s1", result_formats=(1,)
    )
    assert m.decode_bind(body_of(BIND_UNNAMED_TEXT, b"B")) == m.Bind(
        portal="", statement="", result_formats=()
    )


def test_a_bind_compares_hashes_and_shows_like_a_dataclass() -> None:
    one = m.Bind(portal="p", statement="s", result_formats=(1,))
    same = m.Bind(portal="p", statement="s", result_formats=(1,))
    assert one == same
    assert hash(one) == hash(same)
    assert one != m.Bind(portal="p", statement="s", result_formats=(0,))
    assert one != ("p", "s", (1,))
    assert repr(one) == "Bind(portal='p', statement='s', result_formats=(1,))"


def test_the_hot_path_readers_agree_with_the_decoders() -> None:
    query = body_of(QUERY, b"Q")
    assert m.query_text(query) == m.decode_query(query).sql
    execute = body_of(EXECUTE, b"E")
    assert m.execute_portal(execute) == m.decode_execute(execute).portal
    describe = body_of(DESCRIBE_STATEMENT, b"D")
    found = m.decode_describe(describe)
    assert m.describe_target(describe) == (found.kind, found.name)
    for reader, body in (
        (m.query_text, b"SELECT 1\0junk"),
        (m.execute_portal, b"p\0\0\0"),
        (m.describe_target, b"X\0"),
    ):
        with pytest.raises(RemoteProtocolError):
            reader(body)


def _query_text_by_the_general_path(body: bytes) -> str:
    sql, pos = m._cstring(body, 0)
    if pos != len(body):
        raise RemoteProtocolError("trailing bytes after Query string")
    return sql


@settings(max_examples=500, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=40),
        st.lists(st.sampled_from([b"a", b"\0", b"\xff", b"\xc3\xa9", b"\xc3"]), max_size=12).map(
            b"".join
        ),
    )
)
def test_the_query_text_fast_path_answers_as_the_general_path(body: bytes) -> None:
    """The same text, or the same error, for any body: the fast path only
    takes a body whose one NUL ends it."""
    outcomes: list[object] = []
    for read in (m.query_text, _query_text_by_the_general_path):
        try:
            outcomes.append(read(body))
        except RemoteProtocolError as exc:
            outcomes.append(("error", str(exc)))
    assert outcomes[0] == outcomes[1]


def test_bind_parameters_with_formats_null_and_binary() -> None:
    assert m.bind_parameters(body_of(BIND, b"B")) == ((0, 1), [None, b"\x00\x00\x00\x2a"])
    assert m.bind_parameters(body_of(BIND_UNNAMED_TEXT, b"B")) == ((0,), [b"hi"])


def test_bind_parameters_one_format_code_applies_to_all() -> None:
    body = b"\x00\x00\x00\x01\x00\x01\x00\x02" + b"\x00\x00\x00\x01a" * 2 + b"\x00\x00"
    assert m.bind_parameters(body) == ((1, 1), [b"a", b"a"])


@pytest.mark.parametrize(
    "body",
    [
        # two format codes for three parameters
        b"\x00\x00\x00\x02\x00\x00\x00\x00\x00\x03" + b"\xff\xff\xff\xff" * 3 + b"\x00\x00",
        # a format code that is neither text nor binary
        b"\x00\x00\x00\x01\x00\x02\x00\x01\x00\x00\x00\x01a\x00\x00",
        b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x05ab",  # value runs past the end
        b"\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfe",  # length -2
    ],
)
def test_bind_parameters_rejects_malformed(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        m.bind_parameters(body)


def test_function_call_arguments_and_result_format() -> None:
    # lowrite(fd 0, '\x01\x02'): both arguments binary, binary result.
    body = (
        struct.pack("!I", 955)
        + b"\x00\x01\x00\x01"
        + b"\x00\x02"
        + b"\x00\x00\x00\x04\x00\x00\x00\x00"
        + b"\x00\x00\x00\x02\x01\x02"
        + b"\x00\x01"
    )
    assert m.decode_function_call(body) == m.FunctionCall(
        oid=955, formats=(1, 1), arguments=[b"\x00\x00\x00\x00", b"\x01\x02"], result_format=1
    )


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x00\x03\xbb\x00\x00\x00\x00",  # no result format
        b"\x00\x00\x03\xbb\x00\x00\x00\x00\x00\x00\x00",  # a byte too many
        b"\x00\x00\x03\xbb\x00\x00\x00\x00\x00\x02",  # result format 2
        b"\x00\x00\x03\xbb\x00\x00\x00\x01\x00\x00\x00\x09ab\x00\x00",  # value past the end
        b"\x00\x00",  # no oid
    ],
)
def test_function_call_rejects_malformed(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        m.decode_function_call(body)


def test_bind_per_column_result_formats() -> None:
    body = b"\x00s\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x01\x00\x00"
    assert m.decode_bind(body).result_formats == (0, 1, 0)


def test_bind_with_more_than_32767_parameters() -> None:
    count = 33_000
    body = (
        b"\x00\x00"
        + b"\x00\x00"
        + struct.pack("!H", count)
        + b"\xff\xff\xff\xff" * count
        + b"\x00\x00"
    )
    assert m.decode_bind(body) == m.Bind(portal="", statement="", result_formats=())


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x00",  # no counts at all
        b"\x00\x00\x00\x00\x00\x01",  # one parameter announced, none present
        b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x05ab\x00\x00",  # value runs past the end
        b"\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00",  # length -2
        b"\x00\x00\x00\x00\x00\x00\x00\x01",  # result format announced, missing
        b"\x00\x00\x00\x00\x00\x00\x00\x00junk",  # trailing bytes
        b"\x00\x00\x00\x01",  # a format code announced, missing
    ],
)
def test_bind_rejects_malformed(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        m.decode_bind(body)


_NAMES = st.text(alphabet=st.characters(blacklist_characters="\0", codec="utf-8"), max_size=8)
_VALUES = st.lists(st.one_of(st.none(), st.binary(max_size=300)), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    portal=_NAMES,
    statement=_NAMES,
    values=_VALUES,
    codes=st.data(),
    result_formats=st.lists(st.integers(-32768, 32767), max_size=5),
)
def test_bind_bodies_packed_with_struct_decode_exactly(
    portal: str,
    statement: str,
    values: list[bytes | None],
    codes: st.DataObject,
    result_formats: list[int],
) -> None:
    """Every field, signed result formats included, as `struct` packed it;
    every truncation of the body is refused as the peer's error."""
    count = codes.draw(st.sampled_from(sorted({0, 1, len(values)})))
    formats = codes.draw(st.lists(st.sampled_from([0, 1]), min_size=count, max_size=count))
    body = portal.encode() + b"\0" + statement.encode() + b"\0"
    body += struct.pack(f"!H{count}h", count, *formats) + struct.pack("!H", len(values))
    for value in values:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    body += struct.pack(f"!H{len(result_formats)}h", len(result_formats), *result_formats)
    assert m.decode_bind(body) == m.Bind(
        portal=portal, statement=statement, result_formats=tuple(result_formats)
    )
    each = formats if count == len(values) else (formats[0] if formats else 0,) * len(values)
    assert m.bind_parameters(body) == (tuple(each), values)
    for cut in range(len(body)):
        with pytest.raises(RemoteProtocolError):
            m.decode_bind(body[:cut])


def test_execute_decode() -> None:
    assert m.decode_execute(body_of(EXECUTE, b"E")) == m.Execute(portal="p1", max_rows=0)
    assert m.decode_execute(body_of(EXECUTE_LIMIT, b"E")) == m.Execute(portal="", max_rows=100)


def test_describe_decode() -> None:
    assert m.decode_describe(body_of(DESCRIBE_STATEMENT, b"D")) == m.Describe(kind="S", name="s1")
    assert m.decode_describe(body_of(DESCRIBE_PORTAL, b"D")) == m.Describe(kind="P", name="")


def test_close_decode() -> None:
    assert m.decode_close(body_of(CLOSE_PORTAL, b"C")) == m.Close(kind="P", name="p1")
    assert m.decode_close(body_of(CLOSE_STATEMENT, b"C")) == m.Close(kind="S", name="s1")


@pytest.mark.parametrize("decode", [m.decode_describe, m.decode_close])
@pytest.mark.parametrize("body", [b"", b"Xs1\x00", b"Ss1", b"Ss1\x00\x00"])
def test_describe_and_close_reject_malformed(decode: object, body: bytes) -> None:
    assert callable(decode)
    with pytest.raises(RemoteProtocolError):
        decode(body)


def test_password_both_ways() -> None:
    assert m.decode_password(body_of(PASSWORD, b"p")) == "secret"
    assert m.encode_password("secret") == PASSWORD


def test_sasl_initial_response_encode() -> None:
    assert m.encode_sasl_initial("SCRAM-SHA-256", b"n,,n=,r=x") == SASL_INITIAL
    assert m.encode_sasl_initial("PLAIN", b"") == SASL_INITIAL_EMPTY


def test_sasl_response_encode() -> None:
    assert m.encode_sasl_response(b"c=biws") == SASL_RESPONSE


def test_terminate() -> None:
    assert m.TERMINATE_MESSAGE == TERMINATE


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (m.decode_query, b"SELECT 1"),
        (m.decode_query, b"SELECT 1\x00\x00"),
        (m.decode_parse, b"s\x00SELECT 1\x00\x00"),
        (m.decode_parse, b"s\x00SELECT 1\x00\x00\x02\x00\x00\x00\x17"),
        (m.decode_execute, b"p\x00\x00\x00"),
        (m.decode_execute, b"p\x00\x00\x00\x00\x00\x00"),
        (m.decode_password, b"secret"),
        (m.decode_password, b"secret\x00x"),
    ],
)
def test_frontend_decoders_reject_malformed(decode: object, body: bytes) -> None:
    assert callable(decode)
    with pytest.raises(RemoteProtocolError):
        decode(body)


# Backend messages

AUTH_OK = b"R\x00\x00\x00\x08\x00\x00\x00\x00"
AUTH_CLEARTEXT = b"R\x00\x00\x00\x08\x00\x00\x00\x03"
AUTH_MD5 = b"R\x00\x00\x00\x0c\x00\x00\x00\x05\x01\x02\x03\x04"
AUTH_SASL = (
    b"R\x00\x00\x00\x2a"
    b"\x00\x00\x00\x0a"  # 10: SASL
    b"SCRAM-SHA-256-PLUS\x00"
    b"SCRAM-SHA-256\x00"
    b"\x00"
)
AUTH_SASL_CONTINUE = b"R\x00\x00\x00\x0e\x00\x00\x00\x0br=abcd"
AUTH_SASL_FINAL = b"R\x00\x00\x00\x0c\x00\x00\x00\x0cv=ab"
PARAMETER_STATUS = b"S\x00\x00\x00\x19client_encoding\x00UTF8\x00"
BACKEND_KEY_DATA = b"K\x00\x00\x00\x0c\x00\x00\x30\x39\xde\xad\xbe\xef"
READY_FOR_QUERY = b"Z\x00\x00\x00\x05I"
READY_IN_TRANSACTION = b"Z\x00\x00\x00\x05T"
COMMAND_COMPLETE = b"C\x00\x00\x00\x0fINSERT 0 1\x00"
ERROR_RESPONSE = (
    b'E\x00\x00\x00\x37SERROR\x00VERROR\x00C42P01\x00Mrelation "t" does not exist\x00\x00'
)
ERROR_WITH_DETAIL_HINT = (
    b"E\x00\x00\x00\x35SFATAL\x00VFATAL\x00C28P01\x00Mbad token\x00Dd\x00Hask for one\x00\x00"
)
NOTICE_RESPONSE = b"N\x00\x00\x00\x20SNOTICE\x00VNOTICE\x00C00000\x00Mhi\x00\x00"
ROW_DESCRIPTION = (
    b"T\x00\x00\x00\x33"
    b"\x00\x02"  # two fields
    b"id\x00"
    b"\x00\x00\x40\x00"  # table oid 16384
    b"\x00\x01"  # column 1
    b"\x00\x00\x00\x17"  # int4
    b"\x00\x04"  # size 4
    b"\xff\xff\xff\xff"  # typmod -1
    b"\x00\x00"  # text
    b"email\x00"
    b"\x00\x00\x40\x00"
    b"\x00\x02"
    b"\x00\x00\x00\x19"  # text
    b"\xff\xff"  # size -1 (varlena)
    b"\xff\xff\xff\xff"
    b"\x00\x01"  # binary
)
DATA_ROW = (
    b"D\x00\x00\x00\x13"
    b"\x00\x03"  # three columns
    b"\x00\x00\x00\x01"
    b"1"
    b"\xff\xff\xff\xff"  # NULL
    b"\x00\x00\x00\x00"  # empty string, not NULL
)
DATA_ROW_BINARY = b"D\x00\x00\x00\x0e\x00\x01\x00\x00\x00\x04\x00\x00\x00\x2a"
NOTIFICATION = b"A\x00\x00\x00\x15\x00\x00\x30\x39chan\x00payload\x00"


def test_authentication_codes_both_ways() -> None:
    cases = [
        (AUTH_OK, m.AUTH_OK, b""),
        (AUTH_CLEARTEXT, m.AUTH_CLEARTEXT, b""),
        (AUTH_MD5, m.AUTH_MD5, b"\x01\x02\x03\x04"),
        (AUTH_SASL_CONTINUE, m.AUTH_SASL_CONTINUE, b"r=abcd"),
        (AUTH_SASL_FINAL, m.AUTH_SASL_FINAL, b"v=ab"),
    ]
    for golden, code, payload in cases:
        assert m.decode_authentication(body_of(golden, b"R")) == m.AuthenticationRequest(
            code=code, payload=payload
        )
        assert m.authentication(code, payload) == golden
    assert (m.AUTH_OK, m.AUTH_CLEARTEXT, m.AUTH_MD5) == (0, 3, 5)
    assert (m.AUTH_SASL, m.AUTH_SASL_CONTINUE, m.AUTH_SASL_FINAL) == (10, 11, 12)


def test_authentication_sasl_mechanisms() -> None:
    req = m.decode_authentication(body_of(AUTH_SASL, b"R"))
    assert req.code == m.AUTH_SASL
    assert m.decode_sasl_mechanisms(req.payload) == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
    assert m.authentication(m.AUTH_SASL, b"SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00") == (
        AUTH_SASL
    )
    assert m.decode_sasl_mechanisms(b"\x00") == []
    with pytest.raises(RemoteProtocolError):
        m.decode_sasl_mechanisms(b"SCRAM-SHA-256")


def test_authentication_truncated() -> None:
    with pytest.raises(RemoteProtocolError):
        m.decode_authentication(b"\x00\x00\x00")


def test_parameter_status_both_ways() -> None:
    assert m.decode_parameter_status(body_of(PARAMETER_STATUS, b"S")) == (
        "client_encoding",
        "UTF8",
    )
    assert m.parameter_status("client_encoding", "UTF8") == PARAMETER_STATUS
    with pytest.raises(RemoteProtocolError):
        m.decode_parameter_status(b"client_encoding\x00UTF8")


def test_backend_key_data_both_ways() -> None:
    assert m.decode_backend_key(body_of(BACKEND_KEY_DATA, b"K")) == m.BackendKeyData(
        process_id=12345, secret_key=-559038737
    )
    assert m.backend_key_data(12345, -559038737) == BACKEND_KEY_DATA
    with pytest.raises(RemoteProtocolError, match="8 bytes"):
        m.decode_backend_key(b"\x00" * 7)


def test_ready_for_query_encode() -> None:
    assert m.ready_for_query("I") == READY_FOR_QUERY
    assert m.ready_for_query("T") == READY_IN_TRANSACTION


def test_command_complete_both_ways() -> None:
    assert m.decode_command_complete(body_of(COMMAND_COMPLETE, b"C")) == "INSERT 0 1"
    assert m.command_complete("INSERT 0 1") == COMMAND_COMPLETE


def test_error_response_both_ways() -> None:
    fields = m.decode_fields(body_of(ERROR_RESPONSE, b"E"))
    assert fields == {"S": "ERROR", "V": "ERROR", "C": "42P01", "M": 'relation "t" does not exist'}
    assert m.encode_fields(b"E", fields) == ERROR_RESPONSE
    assert m.error_response("42P01", 'relation "t" does not exist') == ERROR_RESPONSE


def test_error_response_with_detail_and_hint() -> None:
    assert (
        m.error_response("28P01", "bad token", severity="FATAL", detail="d", hint="ask for one")
        == ERROR_WITH_DETAIL_HINT
    )
    assert m.decode_fields(body_of(ERROR_WITH_DETAIL_HINT, b"E")) == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "28P01",
        "M": "bad token",
        "D": "d",
        "H": "ask for one",
    }


def test_notice_response_both_ways() -> None:
    assert m.notice_response("hi") == NOTICE_RESPONSE
    assert m.decode_fields(body_of(NOTICE_RESPONSE, b"N")) == {
        "S": "NOTICE",
        "V": "NOTICE",
        "C": "00000",
        "M": "hi",
    }


def test_decode_fields_tolerates_bad_utf8_and_rejects_unterminated() -> None:
    assert m.decode_fields(b"M\xff\x00\x00") == {"M": "\ufffd"}
    assert m.decode_fields(b"") == {}
    with pytest.raises(RemoteProtocolError, match="unterminated"):
        m.decode_fields(b"Mno end")


ROW_FIELDS = [
    m.FieldDescription(
        name="id",
        table_oid=16384,
        column=1,
        type_oid=23,
        type_size=4,
        type_modifier=-1,
        format=0,
    ),
    m.FieldDescription(
        name="email",
        table_oid=16384,
        column=2,
        type_oid=25,
        type_size=-1,
        type_modifier=-1,
        format=1,
    ),
]


def test_row_description_both_ways() -> None:
    assert m.decode_row_description(body_of(ROW_DESCRIPTION, b"T")) == ROW_FIELDS
    assert m.encode_row_description(ROW_FIELDS) == ROW_DESCRIPTION
    assert m.decode_row_description(b"\x00\x00") == []
    assert m.encode_row_description([]) == b"T\x00\x00\x00\x06\x00\x00"


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00", b"\x00\x01", b"\x00\x01id", b"\x00\x01id\x00\x00\x00\x40\x00"],
)
def test_row_description_rejects_truncated(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        m.decode_row_description(body)


def test_data_row_with_nulls_both_ways() -> None:
    assert m.decode_data_row(body_of(DATA_ROW, b"D")) == [b"1", None, b""]
    assert m.encode_data_row([b"1", None, b""]) == DATA_ROW
    assert m.decode_data_row(body_of(DATA_ROW_BINARY, b"D")) == [b"\x00\x00\x00\x2a"]
    assert m.encode_data_row([b"\x00\x00\x00\x2a"]) == DATA_ROW_BINARY
    assert m.decode_data_row(memoryview(body_of(DATA_ROW, b"D"))) == [b"1", None, b""]


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00", b"\x00\x01", b"\x00\x01\x00\x00", b"\x00\x01\x00\x00\x00\x05abc"],
)
def test_data_row_rejects_truncated(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        m.decode_data_row(body)


def test_notification_both_ways() -> None:
    assert m.decode_notification(body_of(NOTIFICATION, b"A")) == (12345, "chan", "payload")
    assert m.encode_notification(12345, "chan", "payload") == NOTIFICATION
    for bad in (b"\x00\x00\x30", b"\x00\x00\x30\x39chan", b"\x00\x00\x30\x39chan\x00payload"):
        with pytest.raises(RemoteProtocolError):
            m.decode_notification(bad)


def test_message_type_constants_match_the_protocol() -> None:
    frontend = {
        "QUERY": "Q",
        "PARSE": "P",
        "BIND": "B",
        "EXECUTE": "E",
        "DESCRIBE": "D",
        "CLOSE": "C",
        "SYNC": "S",
        "FLUSH": "H",
        "TERMINATE": "X",
        "FUNCTION_CALL": "F",
        "PASSWORD": "p",
        "COPY_DATA": "d",
        "COPY_DONE": "c",
        "COPY_FAIL": "f",
    }
    backend = {
        "AUTHENTICATION": "R",
        "PARAMETER_STATUS": "S",
        "BACKEND_KEY_DATA": "K",
        "READY_FOR_QUERY": "Z",
        "ROW_DESCRIPTION": "T",
        "DATA_ROW": "D",
        "COMMAND_COMPLETE": "C",
        "EMPTY_QUERY": "I",
        "ERROR_RESPONSE": "E",
        "NOTICE_RESPONSE": "N",
        "NOTIFICATION_RESPONSE": "A",
        "PARSE_COMPLETE": "1",
        "BIND_COMPLETE": "2",
        "CLOSE_COMPLETE": "3",
        "NO_DATA": "n",
        "PARAMETER_DESCRIPTION": "t",
        "PORTAL_SUSPENDED": "s",
        "COPY_IN_RESPONSE": "G",
        "COPY_OUT_RESPONSE": "H",
        "COPY_BOTH_RESPONSE": "W",
        "FUNCTION_CALL_RESPONSE": "V",
        "NEGOTIATE_PROTOCOL_VERSION": "v",
    }
    for name, letter in {**frontend, **backend}.items():
        assert getattr(m, name) == ord(letter), name
    assert (m.PROTOCOL_3_0, m.SSL_REQUEST_CODE) == (196608, 80877103)
    assert (m.GSSENC_REQUEST_CODE, m.CANCEL_REQUEST_CODE) == (80877104, 80877102)


@settings(max_examples=400, deadline=None)
@given(
    body=st.binary(max_size=80)
    | st.builds(
        lambda name, rest: name + b"\0" + rest,
        st.binary(max_size=70).map(lambda b: b.replace(b"\0", b"")),
        st.binary(max_size=10),
    ),
    pos=st.integers(min_value=0, max_value=90),
)
def test_names_read_as_any_c_string_does(body: bytes, pos: int) -> None:
    """Names (statements, portals, tags, columns) are found by a loop over
    their first bytes and texts by a search: the same string, the same end
    and the same errors either way, short or long, terminated or not."""

    def read(decode: Callable[[bytes, int], tuple[str, int]]) -> tuple[str, int] | str:
        try:
            return decode(body, pos)
        except RemoteProtocolError as exc:
            return str(exc)

    assert read(m._name) == read(m._cstring)
