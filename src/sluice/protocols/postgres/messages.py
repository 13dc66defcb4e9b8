"""PostgreSQL messages: typed decoding and encoding, pure functions.

Only the messages the gateway must understand are decoded into objects; the
rest pass through as frames. Decoders raise `RemoteProtocolError` on any
malformed body, never anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from sluice.protocols.postgres.errors import RemoteProtocolError
from sluice.protocols.postgres.framing import frame, untyped_frame

PROTOCOL_3_0: Final = 196608
SSL_REQUEST_CODE: Final = 80877103
GSSENC_REQUEST_CODE: Final = 80877104
CANCEL_REQUEST_CODE: Final = 80877102

# Frontend message types.
QUERY: Final = ord("Q")
PARSE: Final = ord("P")
BIND: Final = ord("B")
EXECUTE: Final = ord("E")
DESCRIBE: Final = ord("D")
CLOSE: Final = ord("C")
SYNC: Final = ord("S")
FLUSH: Final = ord("H")
TERMINATE: Final = ord("X")
FUNCTION_CALL: Final = ord("F")
PASSWORD: Final = ord("p")
COPY_DATA: Final = ord("d")
COPY_DONE: Final = ord("c")
COPY_FAIL: Final = ord("f")

# Backend message types.
AUTHENTICATION: Final = ord("R")
PARAMETER_STATUS: Final = ord("S")
BACKEND_KEY_DATA: Final = ord("K")
READY_FOR_QUERY: Final = ord("Z")
ROW_DESCRIPTION: Final = ord("T")
DATA_ROW: Final = ord("D")
COMMAND_COMPLETE: Final = ord("C")
EMPTY_QUERY: Final = ord("I")
ERROR_RESPONSE: Final = ord("E")
NOTICE_RESPONSE: Final = ord("N")
NOTIFICATION_RESPONSE: Final = ord("A")
PARSE_COMPLETE: Final = ord("1")
BIND_COMPLETE: Final = ord("2")
CLOSE_COMPLETE: Final = ord("3")
NO_DATA: Final = ord("n")
PARAMETER_DESCRIPTION: Final = ord("t")
PORTAL_SUSPENDED: Final = ord("s")
COPY_IN_RESPONSE: Final = ord("G")
COPY_OUT_RESPONSE: Final = ord("H")
COPY_BOTH_RESPONSE: Final = ord("W")
FUNCTION_CALL_RESPONSE: Final = ord("V")
NEGOTIATE_PROTOCOL_VERSION: Final = ord("v")

# Authentication request codes.
AUTH_OK: Final = 0
AUTH_CLEARTEXT: Final = 3
AUTH_MD5: Final = 5
AUTH_SASL: Final = 10
AUTH_SASL_CONTINUE: Final = 11
AUTH_SASL_FINAL: Final = 12

_I32: Final = struct.Struct("!i")
_U32: Final = struct.Struct("!I")
_I16: Final = struct.Struct("!h")
# Parse and Bind counts are read by the server as unsigned 16-bit (libpq
# allows up to 65535 parameters), so the gateway must read them the same way.
_U16: Final = struct.Struct("!H")
_KEY: Final = struct.Struct("!iii")


# Startup-phase packets (client to server, untyped).


@dataclass(frozen=True, slots=True, kw_only=True)
class SSLRequest:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class GSSENCRequest:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequest:
    process_id: int
    secret_key: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StartupMessage:
    protocol: int
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def user(self) -> str:
        return self.parameters.get("user", "")

    @property
    def database(self) -> str:
        return self.parameters.get("database") or self.user


StartupPacket = SSLRequest | GSSENCRequest | CancelRequest | StartupMessage


def _cstring(body: bytes, pos: int) -> tuple[str, int]:
    end = body.find(b"\0", pos)
    if end < 0:
        raise RemoteProtocolError("unterminated string in message")
    if end == pos:  # unnamed portals and statements: no slice to decode
        return "", end + 1
    try:
        return body[pos:end].decode(), end + 1
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("string in message is not valid UTF-8") from exc


_SHORT_NAME: Final = 32
"""Statement and portal names, command tags and column names nearly always
end within this many bytes."""


def _name(body: bytes, pos: int) -> tuple[str, int]:
    """`_cstring` for a name: compiled, a loop over its first bytes finds its
    end for less than a call of bytes.find (the long ones fall back to it)."""
    end = pos
    stop = min(len(body), pos + _SHORT_NAME)
    while end < stop and body[end] != 0:
        end += 1
    if end >= stop:  # not within the first bytes, or past the end
        return _cstring(body, pos)
    if end == pos:
        return "", end + 1
    try:
        return body[pos:end].decode(), end + 1
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("string in message is not valid UTF-8") from exc


# Integers read by indexing: compiled (`sluice._compiled`), a byte of `bytes`
# is a native read, where struct's unpack_from makes a tuple per field. Past
# the end they raise IndexError, which callers report as a truncated message.


def _u16(body: bytes, pos: int) -> int:
    return body[pos] << 8 | body[pos + 1]


def _i16(body: bytes, pos: int) -> int:
    value = body[pos] << 8 | body[pos + 1]
    return value - 0x10000 if value & 0x8000 else value


def _i32(body: bytes, pos: int) -> int:
    value = body[pos] << 24 | body[pos + 1] << 16 | body[pos + 2] << 8 | body[pos + 3]
    return value - 0x100000000 if value & 0x80000000 else value


def decode_startup(body: bytes) -> StartupPacket:
    if len(body) < 4:
        raise RemoteProtocolError("startup packet too short")
    (code,) = _I32.unpack_from(body, 0)
    if code == SSL_REQUEST_CODE and len(body) == 4:
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE and len(body) == 4:
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        if len(body) != 12:
            raise RemoteProtocolError("CancelRequest must be 16 bytes")
        _, pid, key = _KEY.unpack_from(body, 0)
        return CancelRequest(process_id=pid, secret_key=key)
    if code >> 16 != 3:
        raise RemoteProtocolError(
            f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
            "this gateway speaks protocol 3.0"
        )
    params: dict[str, str] = {}
    pos = 4
    while True:
        if pos >= len(body):
            raise RemoteProtocolError("startup packet is missing its terminator")
        if body[pos] == 0:
            break
        key_name, pos = _cstring(body, pos)
        value, pos = _cstring(body, pos)
        params[key_name] = value
    if "user" not in params or not params["user"]:
        raise RemoteProtocolError("no PostgreSQL user name specified in startup packet")
    return StartupMessage(protocol=code, parameters=params)


def encode_startup(parameters: dict[str, str], protocol: int = PROTOCOL_3_0) -> bytes:
    body = bytearray(_I32.pack(protocol))
    for key, value in parameters.items():
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return untyped_frame(bytes(body))


def encode_ssl_request() -> bytes:
    return untyped_frame(_I32.pack(SSL_REQUEST_CODE))


def encode_cancel_request(process_id: int, secret_key: int) -> bytes:
    return untyped_frame(_KEY.pack(CANCEL_REQUEST_CODE, process_id, secret_key))


# Frontend messages.


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    sql: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Parse:
    name: str
    sql: str
    param_types: tuple[int, ...]


class Bind:
    """A Bind's portal, statement and result formats (its parameters stay in its body).

    Immutable like the dataclasses here, but a plain class: one is made per
    execution, and compiled (`sluice._compiled`) its constructor is native,
    where a dataclass's generated `__init__` runs as interpreted Python.
    """

    __slots__ = ("portal", "result_formats", "statement")

    def __init__(self, *, portal: str, statement: str, result_formats: tuple[int, ...]) -> None:
        self.portal: Final = portal
        self.statement: Final = statement
        self.result_formats: Final = result_formats

    def _fields(self) -> tuple[str, str, tuple[int, ...]]:
        return self.portal, self.statement, self.result_formats

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bind) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"Bind(portal={self.portal!r}, statement={self.statement!r}, "
            f"result_formats={self.result_formats!r})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Execute:
    portal: str
    max_rows: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Describe:
    kind: str  # "S" statement or "P" portal
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    kind: str
    name: str


def decode_query(body: bytes) -> Query:
    return Query(sql=query_text(body))


def query_text(body: bytes) -> str:
    """`decode_query(body).sql`, without the message object (per statement)."""
    last = len(body) - 1
    if last > 0 and body[last] == 0:
        # The usual message: its one NUL ends it. Checked without bytes.find
        # (compiled, a method call with an argument tuple); anything else,
        # an invalid text included, takes the general path and its errors.
        try:
            sql = body[:last].decode()
        except UnicodeDecodeError:
            pass
        else:
            if "\0" not in sql:
                return sql
    sql, pos = _cstring(body, 0)
    if pos != len(body):
        raise RemoteProtocolError("trailing bytes after Query string")
    return sql


def decode_parse(body: bytes) -> Parse:
    name, pos = _name(body, 0)
    sql, pos = _cstring(body, pos)
    if len(body) < pos + 2:
        raise RemoteProtocolError("Parse message truncated")
    count = _u16(body, pos)
    pos += 2
    if len(body) != pos + 4 * count:
        raise RemoteProtocolError("Parse parameter type count does not match its length")
    types = struct.unpack_from(f"!{count}I", body, pos) if count else ()
    return Parse(name=name, sql=sql, param_types=tuple(types))


def decode_bind(body: bytes) -> Bind:
    portal, pos = _name(body, 0)
    statement, pos = _name(body, pos)
    try:
        pos += 2 + 2 * _u16(body, pos)  # the parameters' format codes
        nparams = _u16(body, pos)
        pos += 2
        for _ in range(nparams):
            plen = _i32(body, pos)
            pos += 4
            if plen > 0:
                pos += plen
            elif plen < -1:
                raise RemoteProtocolError("invalid parameter length in Bind")
        nres = _u16(body, pos)
        pos += 2
        formats = tuple([_i16(body, pos + 2 * i) for i in range(nres)]) if nres else ()
        pos += 2 * nres
    except IndexError as exc:
        raise RemoteProtocolError("Bind message truncated") from exc
    if pos != len(body):
        raise RemoteProtocolError("Bind message length does not match its contents")
    return Bind(portal=portal, statement=statement, result_formats=formats)


def bind_parameters(body: bytes) -> tuple[tuple[int, ...], list[bytes | None]]:
    """A Bind's parameter values and each one's format (0 text, 1 binary).

    Separate from `decode_bind`, which every Bind goes through: the values
    are only copied out where a Bind is recorded.
    """
    _, pos = _name(body, 0)
    _, pos = _name(body, pos)
    formats, values, _ = _parameters(body, pos, "Bind")
    return formats, values


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A fast-path function call: the function, its arguments, the result's format."""

    oid: int
    formats: tuple[int, ...]
    arguments: list[bytes | None]
    result_format: int


def decode_function_call(body: bytes) -> FunctionCall:
    try:
        (oid,) = _U32.unpack_from(body, 0)
        formats, arguments, pos = _parameters(body, 4, "FunctionCall")
        (result_format,) = _U16.unpack_from(body, pos)
    except struct.error as exc:
        raise RemoteProtocolError("FunctionCall message truncated") from exc
    if pos + 2 != len(body):
        raise RemoteProtocolError("FunctionCall message has the wrong length")
    if result_format not in (0, 1):
        raise RemoteProtocolError("FunctionCall asks for a result format other than 0 or 1")
    return FunctionCall(oid, formats, arguments, result_format)


def _parameters(
    body: bytes, pos: int, message: str
) -> tuple[tuple[int, ...], list[bytes | None], int]:
    """The format codes and values of a Bind or FunctionCall from `pos`
    (each value with its own format), and where they end."""
    try:
        nfmt = _u16(body, pos)
        codes = tuple([_i16(body, pos + 2 + 2 * i) for i in range(nfmt)]) if nfmt else ()
        pos += 2 + 2 * nfmt
        nparams = _u16(body, pos)
        pos += 2
        if nfmt not in (0, 1, nparams):
            raise RemoteProtocolError(
                f"{message} has {nfmt} parameter format codes for {nparams} parameters"
            )
        size = len(body)
        values: list[bytes | None] = []
        for _ in range(nparams):
            plen = _i32(body, pos)
            pos += 4
            if plen < -1 or pos + max(plen, 0) > size:
                raise RemoteProtocolError(f"invalid parameter length in {message}")
            if plen == -1:
                values.append(None)
            else:
                values.append(body[pos : pos + plen])
                pos += plen
    except IndexError as exc:
        raise RemoteProtocolError(f"{message} message truncated") from exc
    if any(code not in (0, 1) for code in codes):
        raise RemoteProtocolError(f"{message} has a parameter format code other than 0 or 1")
    formats = codes if nfmt == nparams else (codes[0] if codes else 0,) * nparams
    return formats, values, pos


def decode_execute(body: bytes) -> Execute:
    portal = execute_portal(body)
    (max_rows,) = _I32.unpack_from(body, len(body) - 4)
    return Execute(portal=portal, max_rows=max_rows)


def execute_portal(body: bytes) -> str:
    """`decode_execute(body).portal`, without the message object (per execution)."""
    portal, pos = _name(body, 0)
    if len(body) != pos + 4:
        raise RemoteProtocolError("Execute message has the wrong length")
    return portal


def _decode_target(body: bytes, what: str) -> tuple[str, str]:
    if not body or body[0:1] not in (b"S", b"P"):
        raise RemoteProtocolError(f"{what} must target 'S' (statement) or 'P' (portal)")
    name, pos = _name(body, 1)
    if pos != len(body):
        raise RemoteProtocolError(f"trailing bytes in {what}")
    return chr(body[0]), name


def decode_describe(body: bytes) -> Describe:
    kind, name = describe_target(body)
    return Describe(kind=kind, name=name)


def describe_target(body: bytes) -> tuple[str, str]:
    """`decode_describe(body)`'s kind and name, without the message object."""
    return _decode_target(body, "Describe")


def decode_close(body: bytes) -> Close:
    kind, name = _decode_target(body, "Close")
    return Close(kind=kind, name=name)


def decode_password(body: bytes) -> str:
    value, pos = _cstring(body, 0)
    if pos != len(body):
        raise RemoteProtocolError("trailing bytes after password")
    return value


def encode_query(sql: str) -> bytes:
    return frame(b"Q", sql.encode() + b"\0")


def encode_password(password: str) -> bytes:
    return frame(b"p", password.encode() + b"\0")


def encode_sasl_initial(mechanism: str, data: bytes) -> bytes:
    return frame(b"p", mechanism.encode() + b"\0" + _I32.pack(len(data)) + data)


def encode_sasl_response(data: bytes) -> bytes:
    return frame(b"p", data)


TERMINATE_MESSAGE: Final = frame(b"X")


# Backend messages.


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationRequest:
    code: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendKeyData:
    process_id: int
    secret_key: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldDescription:
    name: str
    table_oid: int
    column: int
    type_oid: int
    type_size: int
    type_modifier: int
    format: int


def decode_authentication(body: bytes) -> AuthenticationRequest:
    if len(body) < 4:
        raise RemoteProtocolError("Authentication message truncated")
    (code,) = _I32.unpack_from(body, 0)
    return AuthenticationRequest(code=code, payload=bytes(body[4:]))


def decode_sasl_mechanisms(payload: bytes) -> list[str]:
    names = []
    pos = 0
    while pos < len(payload) and payload[pos] != 0:
        name, pos = _cstring(payload, pos)
        names.append(name)
    return names


def decode_backend_key(body: bytes) -> BackendKeyData:
    if len(body) != 8:
        raise RemoteProtocolError("BackendKeyData must be 8 bytes")
    pid, key = struct.unpack("!ii", body)
    return BackendKeyData(process_id=pid, secret_key=key)


def decode_parameter_status(body: bytes) -> tuple[str, str]:
    name, pos = _name(body, 0)
    value, _ = _cstring(body, pos)
    return name, value


def decode_fields(body: bytes) -> dict[str, str]:
    """ErrorResponse / NoticeResponse: one-letter field code to value."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        end = body.find(b"\0", pos + 1)
        if end < 0:
            raise RemoteProtocolError("unterminated field in error or notice")
        fields[code] = body[pos + 1 : end].decode("utf-8", "replace")
        pos = end + 1
    return fields


def encode_fields(kind: bytes, fields: dict[str, str]) -> bytes:
    body = bytearray()
    for code, value in fields.items():
        body += code.encode() + value.encode() + b"\0"
    body += b"\0"
    return frame(kind, bytes(body))


def error_response(
    sqlstate: str,
    message: str,
    *,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
) -> bytes:
    return encode_fields(b"E", _report_fields(severity, sqlstate, message, detail, hint))


def notice_response(
    message: str,
    *,
    severity: str = "NOTICE",
    sqlstate: str = "00000",
    detail: str | None = None,
    hint: str | None = None,
) -> bytes:
    return encode_fields(b"N", _report_fields(severity, sqlstate, message, detail, hint))


def _report_fields(
    severity: str, sqlstate: str, message: str, detail: str | None, hint: str | None
) -> dict[str, str]:
    fields = {"S": severity, "V": severity, "C": sqlstate, "M": message}
    if detail:
        fields["D"] = detail
    if hint:
        fields["H"] = hint
    return fields


def decode_row_description(body: bytes) -> list[FieldDescription]:
    try:
        (count,) = _I16.unpack_from(body, 0)
        pos = 2
        result = []
        for _ in range(count):
            name, pos = _name(body, pos)
            table, col, typ, size, mod, fmt = struct.unpack_from("!IhIhih", body, pos)
            pos += 18
            result.append(
                FieldDescription(
                    name=name,
                    table_oid=table,
                    column=col,
                    type_oid=typ,
                    type_size=size,
                    type_modifier=mod,
                    format=fmt,
                )
            )
    except struct.error as exc:
        raise RemoteProtocolError("RowDescription truncated") from exc
    return result


def encode_row_description(fields: list[FieldDescription]) -> bytes:
    body = bytearray(_I16.pack(len(fields)))
    for f in fields:
        body += f.name.encode() + b"\0"
        body += struct.pack(
            "!IhIhih", f.table_oid, f.column, f.type_oid, f.type_size, f.type_modifier, f.format
        )
    return frame(b"T", bytes(body))


def decode_data_row(body: bytes | memoryview) -> list[bytes | None]:
    try:
        (count,) = _I16.unpack_from(body, 0)
        pos = 2
        values: list[bytes | None] = []
        for _ in range(count):
            (length,) = _I32.unpack_from(body, pos)
            pos += 4
            if length < 0:
                values.append(None)
            else:
                end = pos + length
                if end > len(body):
                    raise RemoteProtocolError("DataRow value runs past the message")
                values.append(bytes(body[pos:end]))
                pos = end
    except struct.error as exc:
        raise RemoteProtocolError("DataRow truncated") from exc
    return values


def encode_data_row(values: list[bytes | None]) -> bytes:
    parts = [_I16.pack(len(values))]
    for value in values:
        if value is None:
            parts.append(_I32.pack(-1))
        else:
            parts.append(_I32.pack(len(value)))
            parts.append(value)
    return frame(b"D", b"".join(parts))


def decode_notification(body: bytes) -> tuple[int, str, str]:
    if len(body) < 4:
        raise RemoteProtocolError("NotificationResponse truncated")
    (pid,) = _I32.unpack_from(body, 0)
    channel, pos = _name(body, 4)
    payload, _ = _cstring(body, pos)
    return pid, channel, payload


def encode_notification(pid: int, channel: str, payload: str) -> bytes:
    return frame(b"A", _I32.pack(pid) + channel.encode() + b"\0" + payload.encode() + b"\0")


def authentication(code: int, payload: bytes = b"") -> bytes:
    return frame(b"R", _I32.pack(code) + payload)


def parameter_status(name: str, value: str) -> bytes:
    return frame(b"S", name.encode() + b"\0" + value.encode() + b"\0")


def backend_key_data(process_id: int, secret_key: int) -> bytes:
    return frame(b"K", struct.pack("!ii", process_id, secret_key))


def ready_for_query(status: str) -> bytes:
    return frame(b"Z", status.encode())


def command_complete(tag: str) -> bytes:
    return frame(b"C", tag.encode() + b"\0")


def decode_command_complete(body: bytes) -> str:
    tag, _ = _name(body, 0)
    return tag
