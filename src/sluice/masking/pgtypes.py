"""Type-safe masking: a masked value must still parse as its PostgreSQL type.

Text-like types take any masked string. JSON keeps valid JSON (only string
and number leaves change). Other types get a valid value of the type when the
strategy allows one (hash of an integer or uuid stays joinable) and NULL
otherwise. In binary format, text-like types carry the same bytes as in text
(jsonb adds a version byte 0x01); every other binary value that must be
masked becomes NULL.
"""

from __future__ import annotations

import ipaddress
import json
import re
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from sluice.masking.strategies import COLUMN_KIND, Action, Replacer, Strategy

# PostgreSQL built-in type OIDs (pg_type.dat).
BOOL = 16
BYTEA = 17
CHAR = 18
NAME = 19
INT8 = 20
INT2 = 21
INT4 = 23
TEXT = 25
OID = 26
JSON = 114
XML = 142
CIDR = 650
FLOAT4 = 700
FLOAT8 = 701
UNKNOWN = 705
MONEY = 790
MACADDR = 829
INET = 869
NAME_ARRAY = 1003
BPCHAR_ARRAY = 1014
TEXT_ARRAY = 1009
VARCHAR_ARRAY = 1015
BPCHAR = 1042
VARCHAR = 1043
DATE = 1082
TIME = 1083
TIMESTAMP = 1114
TIMESTAMPTZ = 1184
INTERVAL = 1186
NUMERIC = 1700
RECORD = 2249
UUID = 2950
JSONB = 3802

TEXT_FORMAT = 0
BINARY_FORMAT = 1

# Any masked string is a valid value of these types, in text format.
TEXT_LIKE: frozenset[int] = frozenset(
    {TEXT, VARCHAR, BPCHAR, NAME, UNKNOWN, XML, RECORD}
    | {TEXT_ARRAY, VARCHAR_ARRAY, BPCHAR_ARRAY, NAME_ARRAY}
)
# Binary format of these is the text itself.
BINARY_TEXT_LIKE: frozenset[int] = frozenset({TEXT, VARCHAR, BPCHAR, NAME, UNKNOWN, XML})
JSON_TYPES: frozenset[int] = frozenset({JSON, JSONB})
# Numbers may hold card, phone or SSN digits: scanned in content mode.
NUMERIC_TYPES: frozenset[int] = frozenset({INT2, INT4, INT8, NUMERIC})
# Binary values decoded to their text form before detectors read them; a
# finding turns such a value into NULL (there is no masked binary form).
DECODED_BINARY_TYPES: frozenset[int] = NUMERIC_TYPES | {INET, CIDR}
# Types whose values cannot carry free text (content scanning skips them):
# timetz, bit and varbit besides the named ones. bytea, tsvector, tsquery and
# jsonpath can, and are scanned.
NO_CONTENT: frozenset[int] = frozenset(
    {BOOL, CHAR, OID, FLOAT4, FLOAT8, MONEY, DATE, TIME, TIMESTAMP, TIMESTAMPTZ}
    | {INTERVAL, UUID, MACADDR, 1266, 1560, 1562}
)
JSONB_BINARY_VERSION = b"\x01"

_INT_BITS = {INT2: 16, INT4: 32, INT8: 64}


def is_text_like(type_oid: int, fmt: int, extra_text_like: frozenset[int] = frozenset()) -> bool:
    if fmt == BINARY_FORMAT:
        return type_oid in BINARY_TEXT_LIKE or type_oid in extra_text_like
    return type_oid in TEXT_LIKE or type_oid in extra_text_like


def scannable(type_oid: int) -> bool:
    """Whether content detectors should read this column's values (any format).

    Binary values of types we cannot edit are still scanned raw (a binary
    record or text[] carries its strings as-is) and become NULL on a finding.
    """
    return type_oid not in NO_CONTENT


def json_payload(value: bytes, type_oid: int, fmt: int) -> bytes:
    """The JSON text of a json/jsonb value (drops the binary jsonb version byte)."""
    if type_oid == JSONB and fmt == BINARY_FORMAT:
        if value[:1] != JSONB_BINARY_VERSION:
            raise ValueError("unsupported binary jsonb version")
        return value[1:]
    return value


def json_wrap(text: bytes, type_oid: int, fmt: int) -> bytes:
    if type_oid == JSONB and fmt == BINARY_FORMAT:
        return JSONB_BINARY_VERSION + text
    return text


def map_json(text: bytes, leaf: Callable[[str], str | None]) -> bytes:
    """Apply `leaf` to every string (and number, as text) in a JSON document.

    `leaf` returns the new string, or None to leave the leaf as it was. Keys
    are masked too. Invalid JSON raises ValueError.
    """
    doc = json.loads(text)

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            new = leaf(node)
            return node if new is None else new
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, int | float):
            new = leaf(json.dumps(node))
            return node if new is None else new
        if isinstance(node, list):
            return [walk(x) for x in node]
        if isinstance(node, dict):
            out = {}
            for k, x in node.items():
                nk = leaf(k)
                out[k if nk is None else nk] = walk(x)
            return out
        return node

    return json.dumps(walk(doc), ensure_ascii=False).encode("utf-8")


def _valid_text_value(type_oid: int, text: bytes) -> bool:
    """Whether `text` parses as `type_oid` (for the few non-text types we keep)."""
    try:
        s = text.decode("ascii")
        if type_oid in _INT_BITS:
            bits = _INT_BITS[type_oid]
            n = int(s)
            return bool(-(2 ** (bits - 1)) <= n < 2 ** (bits - 1))
        if type_oid == NUMERIC:
            Decimal(s)
            return s.strip().lower() not in ("", "nan", "inf", "-inf", "infinity")
        if type_oid == INET:
            ipaddress.ip_interface(s)
            return True
        if type_oid == CIDR:
            ipaddress.ip_network(s)
            return True
        if type_oid == UUID:
            uuid.UUID(s)
            return True
    except (ValueError, InvalidOperation, UnicodeDecodeError):
        return False
    return False


def coerce_masked(
    type_oid: int, fmt: int, masked: bytes | None, extra_text_like: frozenset[int] = frozenset()
) -> bytes | None:
    """A content-masked value (already JSON-safe for json types), or NULL if invalid."""
    if masked is None:
        return None
    if fmt == BINARY_FORMAT:
        if type_oid in BINARY_TEXT_LIKE or type_oid in extra_text_like or type_oid in JSON_TYPES:
            return masked
        return None
    if type_oid in TEXT_LIKE or type_oid in extra_text_like or type_oid in JSON_TYPES:
        return masked
    return masked if _valid_text_value(type_oid, masked) else None


def mask_whole_value(
    value: bytes,
    type_oid: int,
    fmt: int,
    action: Action,
    replacer: Replacer,
    extra_text_like: frozenset[int] = frozenset(),
) -> bytes | None:
    """Mask a whole value of a sensitive column so it still parses as its type."""
    strategy = action.strategy
    if strategy is Strategy.NULL:
        return None
    if is_text_like(type_oid, fmt, extra_text_like):
        return replacer.replace(value, COLUMN_KIND, action)
    if type_oid in JSON_TYPES:

        def leaf(s: str) -> str | None:
            out = replacer.replace(s.encode("utf-8"), COLUMN_KIND, action)
            return None if out is None else out.decode("utf-8", "replace")

        try:
            text = map_json(json_payload(value, type_oid, fmt), leaf)
        except ValueError:
            text = b"null"  # not JSON we can read: fail closed to JSON null
        return json_wrap(text, type_oid, fmt)
    if strategy in (Strategy.HASH, Strategy.FAKE):
        return _pseudonym_of_type(value, type_oid, fmt, replacer)
    return None


def _pseudonym_of_type(value: bytes, type_oid: int, fmt: int, replacer: Replacer) -> bytes | None:
    """A stable value of the same type (joins still work), or NULL."""
    if type_oid in _INT_BITS:
        n = replacer.hash_int(value, _INT_BITS[type_oid])
        if fmt == BINARY_FORMAT:
            return n.to_bytes(_INT_BITS[type_oid] // 8, "big", signed=True)
        return str(n).encode()
    if type_oid == NUMERIC and fmt == TEXT_FORMAT:
        return str(replacer.hash_int(value, 64)).encode()
    if type_oid == UUID:
        u = uuid.UUID(bytes=replacer.digest(value)[:16], version=4)
        return u.bytes if fmt == BINARY_FORMAT else str(u).encode()
    if type_oid == INET and fmt == TEXT_FORMAT:
        return replacer.fake(value, "ip_address")
    return None


# Binary numbers decoded to text so content detectors can read them.
def _decode_int(size: int) -> Callable[[bytes], bytes]:
    fmt = {2: ">h", 4: ">i", 8: ">q"}[size]

    def decode(value: bytes) -> bytes:
        return str(struct.unpack(fmt, value)[0]).encode()

    return decode


def decode_binary_numeric(value: bytes) -> bytes:
    """PostgreSQL binary numeric (ndigits, weight, sign, dscale, base-10000 digits) to text."""
    ndigits, weight, sign, dscale = struct.unpack(">hhHH", value[:8])
    digits = struct.unpack(f">{ndigits}H", value[8 : 8 + 2 * ndigits])
    if sign == 0xC000:
        return b"NaN"
    intpart = "".join(
        f"{digits[i]:04d}" if 0 <= i < ndigits else "0000" for i in range(0, weight + 1)
    ).lstrip("0")
    frac = "".join(
        f"{digits[i]:04d}" if 0 <= i < ndigits else "0000"
        for i in range(weight + 1, weight + 1 + (dscale + 3) // 4)
    )[:dscale]
    text = (intpart or "0") + ("." + frac if dscale else "")
    return (("-" if sign == 0x4000 else "") + text).encode()


_BINARY_NUMBER_DECODERS: dict[int, Callable[[bytes], bytes]] = {
    INT2: _decode_int(2),
    INT4: _decode_int(4),
    INT8: _decode_int(8),
    NUMERIC: decode_binary_numeric,
}


def decode_binary_inet(value: bytes) -> bytes:
    """PostgreSQL binary inet/cidr (family, bits, is_cidr, nb, address) to text."""
    family, bits, _is_cidr, size = value[0], value[1], value[2], value[3]
    address = value[4 : 4 + size]
    if family == 2 and size == 4:  # PGSQL_AF_INET
        text = str(ipaddress.IPv4Address(address))
        full = 32
    elif family == 3 and size == 16:  # PGSQL_AF_INET6
        text = str(ipaddress.IPv6Address(address))
        full = 128
    else:
        raise ValueError("malformed binary inet value")
    return (text if bits == full else f"{text}/{bits}").encode()


def needs_decoding(type_oid: int, fmt: int) -> bool:
    """Whether detectors read this value decoded (`scan_view`), not as sent:
    a binary number or address, or a bytea in text format (hex or escapes)."""
    if fmt == BINARY_FORMAT:
        return type_oid in DECODED_BINARY_TYPES
    return type_oid == BYTEA


def scan_view(value: bytes, type_oid: int, fmt: int) -> bytes:
    """The bytes content detectors should read for this value."""
    if fmt == BINARY_FORMAT:
        decoder = _BINARY_NUMBER_DECODERS.get(type_oid)
        if decoder is not None:
            return decoder(value)
        if type_oid in (INET, CIDR):
            return decode_binary_inet(value)
    elif type_oid == BYTEA:
        return decode_bytea_text(value)
    return value


_BYTEA_ESCAPE = re.compile(rb"\\(\\|[0-7]{3})?")


def decode_bytea_text(value: bytes) -> bytes:
    """The bytes of a bytea in text format: `\\x` and hex digits, or the escape
    format (`bytea_output = escape`: backslash and three octal digits for a
    byte, two backslashes for one). Raises ValueError on anything else."""
    if value.startswith(b"\\x"):
        return bytes.fromhex(value[2:].decode("ascii"))

    def unescape(match: re.Match[bytes]) -> bytes:
        escaped = match.group(1)
        if escaped is None:
            raise ValueError("invalid escape in a bytea value")
        return b"\\" if escaped == b"\\" else bytes((int(escaped, 8),))

    return _BYTEA_ESCAPE.sub(unescape, value) if b"\\" in value else value


def encode_bytea(data: bytes, fmt: int) -> bytes:
    """A bytea value of `data`: raw in binary format, hex in text format
    (which clients read whatever `bytea_output` says)."""
    return data if fmt == BINARY_FORMAT else b"\\x" + data.hex().encode("ascii")
