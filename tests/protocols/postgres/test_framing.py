"""Framing: FrameBuffer, split_startup and scan_headers over byte strings alone."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.protocols.postgres.errors import FrameTooLarge, RemoteProtocolError
from sluice.protocols.postgres.framing import (
    FrameBuffer,
    frame,
    frame_kind,
    header_length,
    scan_headers,
    split_startup,
    untyped_frame,
)

# A short server stream, written out by hand from the protocol's message formats:
# ParseComplete, BindComplete, RowDescription (no columns), DataRow (one NULL),
# CommandComplete "SELECT 1", ReadyForQuery 'I'.
STREAM = (
    b"1\x00\x00\x00\x04"
    b"2\x00\x00\x00\x04"
    b"T\x00\x00\x00\x06\x00\x00"
    b"D\x00\x00\x00\x0a\x00\x01\xff\xff\xff\xff"
    b"C\x00\x00\x00\x0dSELECT 1\x00"
    b"Z\x00\x00\x00\x05I"
)
EXPECTED = [
    (ord("1"), b""),
    (ord("2"), b""),
    (ord("T"), b"\x00\x00"),
    (ord("D"), b"\x00\x01\xff\xff\xff\xff"),
    (ord("C"), b"SELECT 1\x00"),
    (ord("Z"), b"I"),
]


def collect(chunks: list[bytes], *, max_message: int = 1 << 20) -> list[tuple[int, bytes]]:
    buf = FrameBuffer(max_message=max_message)
    out: list[tuple[int, bytes]] = []
    for chunk in chunks:
        buf.feed(chunk)
        out.extend(buf.frames())
    assert buf.pending == 0
    assert not buf.mid_message
    return out


def test_frame_and_untyped_frame_golden() -> None:
    assert frame(b"Q", b"SELECT 1\x00") == b"Q\x00\x00\x00\x0dSELECT 1\x00"
    assert frame(b"X") == b"X\x00\x00\x00\x04"
    assert untyped_frame(b"\x04\xd2\x16\x2f") == b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


def test_whole_stream_in_one_chunk() -> None:
    assert collect([STREAM]) == EXPECTED


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_split_at_every_byte_boundary(cut: int) -> None:
    assert collect([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert collect([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_every_pair_of_cuts() -> None:
    n = len(STREAM)
    for a in range(n + 1):
        for b in range(a, n + 1):
            assert collect([STREAM[:a], STREAM[a:b], STREAM[b:]]) == EXPECTED


def test_partial_frame_is_pending() -> None:
    buf = FrameBuffer(max_message=1024)
    buf.feed(b"C\x00\x00\x00\x0dSELECT")
    assert list(buf.frames()) == []
    assert buf.pending == 11
    assert buf.mid_message
    buf.feed(b" 1\x00")
    assert list(buf.frames()) == [(ord("C"), b"SELECT 1\x00")]
    assert buf.pending == 0


def test_accepts_memoryview_and_bytearray() -> None:
    buf = FrameBuffer(max_message=1024)
    buf.feed(memoryview(STREAM[:7]))
    buf.feed(bytearray(STREAM[7:]))
    assert list(buf.frames()) == EXPECTED


def test_take_raw_returns_unconsumed_bytes() -> None:
    buf = FrameBuffer(max_message=1024)
    buf.feed(b"1\x00\x00\x00\x04" + b"\x16\x03\x01")  # a frame, then a TLS record start
    assert list(buf.frames()) == [(ord("1"), b"")]
    buf.feed(b"\x02\x00")
    assert buf.take_raw() == b"\x16\x03\x01\x02\x00"
    assert buf.pending == 0
    assert buf.take_raw() == b""


def test_declared_length_over_limit_raises_before_body_arrives() -> None:
    buf = FrameBuffer(max_message=1000)
    # Only the header: the gateway must refuse without waiting for 1001 bytes.
    buf.feed(b"D" + struct.pack("!I", 1001))
    with pytest.raises(FrameTooLarge, match="over the limit of 1000"):
        list(buf.frames())
    assert buf.pending == 5


def test_length_exactly_at_limit_is_accepted() -> None:
    buf = FrameBuffer(max_message=8)
    buf.feed(b"d" + struct.pack("!I", 8) + b"abcd")
    assert list(buf.frames()) == [(ord("d"), b"abcd")]


def test_frame_too_large_is_a_remote_error_with_sqlstate() -> None:
    assert issubclass(FrameTooLarge, RemoteProtocolError)
    assert FrameTooLarge.sqlstate == "54000"
    assert RemoteProtocolError.sqlstate == "08P01"


@pytest.mark.parametrize("length", [0, 1, 2, 3])
def test_length_below_four_is_a_protocol_error(length: int) -> None:
    buf = FrameBuffer(max_message=1024)
    buf.feed(b"Q" + struct.pack("!I", length) + b"rest")
    with pytest.raises(RemoteProtocolError, match="invalid message length"):
        list(buf.frames())
    with pytest.raises(RemoteProtocolError, match="invalid message length"):
        list(scan_headers(b"Q" + struct.pack("!I", length)))


def test_valid_frames_before_bad_one_are_yielded() -> None:
    buf = FrameBuffer(max_message=1024)
    buf.feed(b"1\x00\x00\x00\x04" + b"Q\x00\x00\x00\x02")
    frames = buf.frames()
    assert next(frames) == (ord("1"), b"")
    with pytest.raises(RemoteProtocolError):
        next(frames)


def test_buffer_compacts_after_many_frames() -> None:
    buf = FrameBuffer(max_message=1 << 20)
    message = frame(b"d", b"x" * 1000)
    for _ in range(200):
        buf.feed(message + message[:3])
        got = list(buf.frames())
        assert all(body == b"x" * 1000 for _, body in got)
        buf.feed(message[3:])
        assert list(buf.frames()) == [(ord("d"), b"x" * 1000)]
    assert buf.pending == 0


# split_startup


SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


def test_split_startup_complete_packet() -> None:
    assert split_startup(SSL_REQUEST + b"extra", max_message=10_000) == (
        b"\x04\xd2\x16\x2f",
        8,
    )


@pytest.mark.parametrize("cut", range(len(SSL_REQUEST)))
def test_split_startup_incomplete_returns_none(cut: int) -> None:
    assert split_startup(SSL_REQUEST[:cut], max_message=10_000) is None


@pytest.mark.parametrize("length", [0, 4, 7])
def test_split_startup_too_short_length(length: int) -> None:
    with pytest.raises(RemoteProtocolError, match="invalid startup packet length"):
        split_startup(struct.pack("!I", length) + b"\x00" * 8, max_message=10_000)


def test_split_startup_too_large_before_body() -> None:
    with pytest.raises(FrameTooLarge):
        split_startup(struct.pack("!I", 10_001), max_message=10_000)


def test_split_startup_accepts_bytearray() -> None:
    assert split_startup(bytearray(SSL_REQUEST), max_message=100) == (SSL_REQUEST[4:], 8)


# scan_headers equivalence with FrameBuffer

frames_strategy = st.lists(
    st.tuples(st.integers(min_value=0, max_value=255), st.binary(max_size=40)), max_size=12
)


@settings(max_examples=200, deadline=None)
@given(frames=frames_strategy, tail=st.binary(max_size=4), start_junk=st.binary(max_size=6))
def test_scan_headers_matches_frame_buffer(
    frames: list[tuple[int, bytes]], tail: bytes, start_junk: bytes
) -> None:
    stream = b"".join(frame(bytes((k,)), body) for k, body in frames)
    # A partial header at the end stops both walkers without an error.
    data = start_junk + stream + tail
    scanned = [
        (kind, data[start + 5 : end]) for kind, start, end in scan_headers(data, len(start_junk))
    ]
    buf = FrameBuffer(max_message=1 << 20)
    buf.feed(stream + tail)
    assert scanned == list(buf.frames()) == frames
    assert buf.pending == len(tail)
    # And on a memoryview, without copies.
    view = memoryview(bytearray(data))
    assert [(k, s, e) for k, s, e in scan_headers(view, len(start_junk))] == [
        (k, s, e) for k, s, e in scan_headers(data, len(start_junk))
    ]


@settings(max_examples=200, deadline=None)
@given(frames=frames_strategy, cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_any_chunking_reassembles_identically(
    frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(frame(bytes((k,)), body) for k, body in frames)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert collect(chunks) == frames


def test_scan_headers_reports_offsets() -> None:
    got = list(scan_headers(STREAM))
    assert [k for k, _, _ in got] == [k for k, _ in EXPECTED]
    assert got[0][1:] == (0, 5)
    assert got[-1][2] == len(STREAM)
    # Stops at the first incomplete frame; the caller resumes from the last end.
    partial = list(scan_headers(STREAM[:-1]))
    assert len(partial) == len(EXPECTED) - 1
    assert partial[-1][2] == len(STREAM) - 6


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=5, max_size=600), at=st.integers(min_value=0))
def test_header_reads_agree_with_struct_for_every_buffer_type(data: bytes, at: int) -> None:
    """The compiled reads take `bytes` apart from the other buffer types;
    all of them give what `struct` gives, at any offset (past 256 too)."""
    pos = at % (len(data) - 4)
    expected_kind = data[pos]
    (expected_length,) = struct.unpack_from("!I", data, pos + 1)
    for buf in (data, bytearray(data), memoryview(data)):
        assert frame_kind(buf, pos) == expected_kind
        assert header_length(buf, pos) == expected_length
