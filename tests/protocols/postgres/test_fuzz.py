"""The codec's fuzz contract: garbage input returns or raises RemoteProtocolError.

Never IndexError, struct.error, UnicodeDecodeError, ValueError or anything else:
the I/O layer turns a RemoteProtocolError into 08P01 and closes the session; any
other exception is a bug in the codec.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.protocols.postgres import messages as m
from sluice.protocols.postgres.backend_auth import BackendHandshake
from sluice.protocols.postgres.errors import PgProtocolError, RemoteProtocolError
from sluice.protocols.postgres.framing import FrameBuffer, scan_headers, split_startup
from sluice.protocols.postgres.tracker import QueryTracker

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DECODERS: list[Callable[[bytes], Any]] = [
    getattr(m, name) for name in sorted(dir(m)) if name.startswith("decode_")
] + [m.bind_parameters]

# Bytes biased toward what breaks parsers: NULs, 0xff lengths, UTF-8 lead bytes,
# and well-formed pieces that can be glued into almost-valid messages.
pieces = st.one_of(
    st.binary(max_size=24),
    st.sampled_from(
        [
            b"\x00",
            b"\xff\xff\xff\xff",
            b"\xff\xff",
            b"\x00\x01",
            b"\x00\x02",
            b"\x7f\xff",
            b"\xc3",
            b"\xe2\x82",
            b"S",
            b"P",
            b"user\x00",
            b"\x00\x03\x00\x00",
            b"\x04\xd2\x16\x2e",
            b"\x04\xd2\x16\x2f",
            b"\x00\x00\x00\x04",
            b"\x00\x00\x00\x00",
        ]
    ),
)
garbage = st.one_of(st.binary(max_size=200), st.lists(pieces, max_size=12).map(b"".join))


def test_every_decoder_is_covered() -> None:
    names = {fn.__name__ for fn in DECODERS}
    assert {
        "decode_startup",
        "decode_query",
        "decode_parse",
        "decode_bind",
        "decode_execute",
        "decode_describe",
        "decode_close",
        "decode_password",
        "decode_authentication",
        "decode_sasl_mechanisms",
        "decode_backend_key",
        "decode_parameter_status",
        "decode_fields",
        "decode_row_description",
        "decode_data_row",
        "decode_notification",
        "decode_command_complete",
        "bind_parameters",
        "decode_function_call",
    } <= names


def test_remote_error_is_a_pg_protocol_error() -> None:
    assert issubclass(RemoteProtocolError, PgProtocolError)


@pytest.mark.parametrize("decode", DECODERS, ids=lambda fn: fn.__name__)
@FUZZ
@given(data=garbage)
def test_decoders_raise_only_remote_protocol_error(
    decode: Callable[[bytes], Any], data: bytes
) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(data)


@FUZZ
@given(data=garbage)
def test_data_row_on_memoryview(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        m.decode_data_row(memoryview(data))


@FUZZ
@given(
    chunks=st.lists(garbage, max_size=6),
    max_message=st.integers(min_value=4, max_value=1 << 16),
)
def test_frame_buffer_on_garbage(chunks: list[bytes], max_message: int) -> None:
    buf = FrameBuffer(max_message=max_message)
    try:
        for chunk in chunks:
            buf.feed(chunk)
            for kind, body in buf.frames():
                assert 0 <= kind <= 255
                assert len(body) + 4 <= max_message
    except RemoteProtocolError:
        pass


@FUZZ
@given(data=garbage)
def test_scan_headers_on_garbage(data: bytes) -> None:
    try:
        for _, start, end in scan_headers(data):
            assert 0 <= start < end <= len(data)
    except RemoteProtocolError:
        pass


@FUZZ
@given(data=garbage, max_message=st.integers(min_value=8, max_value=10_000))
def test_split_startup_and_decode_startup_on_garbage(data: bytes, max_message: int) -> None:
    try:
        found = split_startup(data, max_message=max_message)
        if found is not None:
            body, consumed = found
            assert consumed == len(body) + 4 <= len(data)
            m.decode_startup(body)
    except RemoteProtocolError:
        pass


@FUZZ
@given(body=garbage)
def test_startup_with_a_valid_length_prefix(body: bytes) -> None:
    packet = struct.pack("!I", len(body) + 4) + body
    try:
        found = split_startup(packet, max_message=10_000)
        assert found is not None or len(packet) < 8
        if found is not None:
            m.decode_startup(found[0])
    except RemoteProtocolError:
        pass


backend_kinds = st.sampled_from(list(b"RSKZNEvTDC1"))


@FUZZ
@given(
    messages=st.lists(st.tuples(backend_kinds, garbage), max_size=8),
    password=st.one_of(st.none(), st.text(max_size=8)),
)
def test_backend_handshake_on_garbage(
    messages: list[tuple[int, bytes]], password: str | None
) -> None:
    hs = BackendHandshake(user="u", password=password, parameters={})
    try:
        for kind, body in messages:
            hs.handle(kind, body)
    except RemoteProtocolError:
        pass


@FUZZ
@given(messages=st.lists(st.tuples(st.sampled_from(list(b"123TnCIsVEZtD")), garbage), max_size=12))
def test_tracker_on_garbage_server_stream(messages: list[tuple[int, bytes]]) -> None:
    t = QueryTracker()
    t.on_parse("", "SELECT 1")
    t.on_bind("", "", (1,))
    t.on_describe("P", "")
    t.on_execute("")
    t.on_sync()
    try:
        for kind, body in messages:
            t.on_server(kind, body)
            t.rows_shape()
    except RemoteProtocolError:
        pass
