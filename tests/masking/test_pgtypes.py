"""Masked values stay valid for their PostgreSQL type and wire format."""

from __future__ import annotations

import json
import struct
import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.masking import pgtypes as t
from sluice.masking.strategies import Action, Replacer, Strategy

R = Replacer(b"k" * 32)
HASH = Action(strategy=Strategy.HASH)
REDACT = Action(strategy=Strategy.REDACT)
FAKE = Action(strategy=Strategy.FAKE)


@pytest.mark.parametrize("oid", [t.TEXT, t.VARCHAR, t.BPCHAR, t.NAME, t.XML, t.UNKNOWN])
@pytest.mark.parametrize("fmt", [0, 1])
def test_text_like_both_formats(oid: int, fmt: int) -> None:
    out = t.mask_whole_value(b"secret", oid, fmt, REDACT, R)
    if fmt == 1 and oid not in t.BINARY_TEXT_LIKE:
        assert out is None
    else:
        assert out == b"[REDACTED]"


def test_json_text_and_jsonb_binary_stay_valid_json() -> None:
    doc = b'{"email": "a@b.com", "n": 5, "list": ["x", null, true]}'
    out = t.mask_whole_value(doc, t.JSON, 0, REDACT, R)
    assert out is not None
    parsed = json.loads(out)
    assert parsed["[REDACTED]"] == "[REDACTED]" or "[REDACTED]" in json.dumps(parsed)
    binary = t.mask_whole_value(b"\x01" + doc, t.JSONB, 1, HASH, R)
    assert binary is not None
    assert binary[:1] == b"\x01"
    json.loads(binary[1:])
    assert t.mask_whole_value(b"not json", t.JSONB, 0, REDACT, R) == b"null"


@pytest.mark.parametrize(
    ("oid", "fmt", "value"),
    [
        (t.INT4, 0, b"42"),
        (t.INT8, 1, struct.pack(">q", 42)),
        (t.UUID, 0, str(uuid.uuid4()).encode()),
        (t.UUID, 1, uuid.uuid4().bytes),
        (t.NUMERIC, 0, b"12.5"),
    ],
)
def test_hash_keeps_type_and_joins(oid: int, fmt: int, value: bytes) -> None:
    a = t.mask_whole_value(value, oid, fmt, HASH, R)
    assert a is not None
    assert a == t.mask_whole_value(value, oid, fmt, HASH, R)
    if fmt == 0 and oid == t.UUID:
        uuid.UUID(a.decode())
    elif fmt == 0:
        Decimal(a.decode())
    elif oid == t.UUID:
        assert len(a) == 16
    else:
        assert len(a) == 8


@pytest.mark.parametrize("oid", [t.INT4, t.DATE, t.TIMESTAMPTZ, t.BOOL, t.INET, t.BYTEA])
def test_redact_non_text_is_null(oid: int) -> None:
    assert t.mask_whole_value(b"1", oid, 0, REDACT, R) is None
    assert t.mask_whole_value(b"\x00\x01", oid, 1, HASH if oid != t.INT4 else REDACT, R) is None


def test_inet_fake_is_valid_inet() -> None:
    out = t.mask_whole_value(b"8.8.8.8", t.INET, 0, FAKE, R)
    assert out is not None
    assert t._valid_text_value(t.INET, out)


def test_coerce_masked() -> None:
    assert t.coerce_masked(t.TEXT, 0, b"[REDACTED:x]") == b"[REDACTED:x]"
    assert t.coerce_masked(t.INT8, 0, b"[REDACTED:x]") is None
    assert t.coerce_masked(t.NUMERIC, 0, b"4000001234567899") == b"4000001234567899"
    assert t.coerce_masked(t.INT8, 1, b"123") is None
    assert t.coerce_masked(12345, 0, b"x", frozenset({12345})) == b"x"  # citext-like
    assert t.coerce_masked(12345, 0, b"x") is None
    assert t.coerce_masked(t.TEXT, 0, None) is None


def test_binary_numbers_are_decoded_for_scanning() -> None:
    assert t.scan_view(struct.pack(">q", 4111111111111111), t.INT8, 1) == b"4111111111111111"
    assert t.scan_view(struct.pack(">i", -7), t.INT4, 1) == b"-7"
    # numeric 1234567.89: ndigits=3 weight=1 sign=0 dscale=2 digits 123 4567 8900
    raw = struct.pack(">hhHH3H", 3, 1, 0, 2, 123, 4567, 8900)
    assert t.decode_binary_numeric(raw) == b"1234567.89"
    neg = struct.pack(">hhHH1H", 1, -1, 0x4000, 4, 5)
    assert t.decode_binary_numeric(neg) == b"-0.0005"


def test_scannable() -> None:
    assert t.scannable(t.TEXT)
    assert t.scannable(t.INT8)
    assert t.scannable(99999)
    assert not t.scannable(t.TIMESTAMPTZ)
    assert not t.scannable(t.BOOL)


def test_bytea_text_is_read_as_its_bytes() -> None:
    assert t.decode_bytea_text(b"\\x6d61696c00ff") == b"mail\x00\xff"
    assert t.decode_bytea_text(b"a\\\\b\\000\\377c") == b"a\\b\x00\xffc"  # escape format
    assert t.decode_bytea_text(b"plain") == b"plain"
    assert t.scan_view(b"\\x6d61", t.BYTEA, t.TEXT_FORMAT) == b"ma"
    assert t.scan_view(b"\\x6d61", t.BYTEA, t.BINARY_FORMAT) == b"\\x6d61"  # raw bytes
    assert t.encode_bytea(b"ma", t.TEXT_FORMAT) == b"\\x6d61"
    assert t.encode_bytea(b"ma", t.BINARY_FORMAT) == b"ma"


@pytest.mark.parametrize("value", [b"\\x6d6", b"\\xzz", b"a\\9b", b"a\\"])
def test_malformed_bytea_text_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match=r"non-hexadecimal|invalid escape"):
        t.decode_bytea_text(value)


def _escape_format(data: bytes) -> bytes:
    """bytea_output = escape, as PostgreSQL writes it."""
    out = bytearray()
    for byte in data:
        if byte == 0x5C:
            out += b"\\\\"
        elif 0x20 <= byte < 0x7F:
            out.append(byte)
        else:
            out += b"\\%03o" % byte
    return bytes(out)


@given(st.binary(max_size=200))
def test_bytea_text_formats_read_back_their_bytes(data: bytes) -> None:
    assert t.decode_bytea_text(t.encode_bytea(data, t.TEXT_FORMAT)) == data
    assert t.decode_bytea_text(_escape_format(data)) == data
    assert t.encode_bytea(data, t.BINARY_FORMAT) == data
