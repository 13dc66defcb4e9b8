"""The compiled record sealer (`_seal.c`) writes exactly the bytes of the Python path."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.events import Identity, Protocol, SessionContext
from sluice.recording import format as fmt
from sluice.recording.format import BULK_RECORD_BYTES, Chain, ChainHash, seal_record, split_line
from sluice.recording.verify import verify
from sluice.recording.writer import _RECORD_HEAD, Recorder

pytestmark = pytest.mark.skipif(
    fmt.new_sealer is None, reason="the compiled sealer was not built (no compiler or OpenSSL)"
)

KEYS = [None, b"k" * 16, b"a-key-of-exactly-sixty-four-bytes".ljust(64, b"!"), b"long" * 40]


def python_line(
    chain: Chain, seq: int, prev: str, kind: str, t: float, wall: bytes, members: bytes
) -> tuple[bytes, str]:
    """The reference: the writer's Python path (`_record_head` and `seal_record`)."""
    content = _RECORD_HEAD % (seq, prev.encode(), kind.encode(), t, wall, members)
    if not members:
        content = content[:-1]
    return seal_record(content, chain)


def compiled_line(
    chain: Chain, seq: int, prev: str, kind: str, t: float, wall: bytes, members: bytes
) -> tuple[bytes, str] | None:
    assert chain.sealer is not None
    return chain.sealer.seal(seq, prev, kind, t, wall, members, chain.sealer_below)


members_json = st.dictionaries(
    st.text(max_size=12),
    st.one_of(
        st.none(),
        st.text(max_size=80),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what orjson encodes
        st.lists(st.text(max_size=8)),
    ),
    max_size=4,
).map(lambda fields: orjson.dumps(fields)[1:-1])


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from(KEYS),
    hash=st.sampled_from([ChainHash.SHA256, ChainHash.SHA256_BLAKE3]),
    seq=st.integers(min_value=0, max_value=2**62),
    prev=st.sampled_from(["", "0" * 64, "ab" * 32]),
    kind=st.sampled_from(["statement", "complete", "bind", "x"]),
    micros=st.integers(min_value=0, max_value=10**16),
    wall=st.sampled_from([b"2026-12-05T14:04:33.123+00:00", b""]),
    members=members_json,
)
def test_compiled_and_python_lines_are_identical(
    key: bytes | None,
    hash: ChainHash,
    seq: int,
    prev: str,
    kind: str,
    micros: int,
    wall: bytes,
    members: bytes,
) -> None:
    chain = Chain(key, hash)
    t = micros / 1_000_000
    assert compiled_line(chain, seq, prev, kind, t, wall, members) == python_line(
        chain, seq, prev, kind, t, wall, members
    )


# Where the sealer writes `t` itself and where it leaves it to Python's repr:
# below 1e-4 repr switches to exponents, and from 1e9 on it no longer is the
# plain decimal of the microseconds.
T_EDGES = [
    0.0,
    -0.0,
    1e-6,
    9.9e-05,
    1e-4,
    0.000101,
    0.1,
    0.5,
    1.0,
    9.999999,
    10.0,
    123456.000001,
    999_999_999.999999,
    1e9,
    1e9 + 0.000001,
    2.0**33 + 0.5,
    1e15,
    1.5e16,
    -1.5,
    0.1 + 0.2,  # not a whole number of microseconds
    1 / 3,
    float("inf"),
    float("-inf"),
    5e-324,
]


@pytest.mark.parametrize("t", T_EDGES)
def test_t_is_written_as_repr_writes_it(t: float) -> None:
    chain = Chain(None, ChainHash.SHA256)
    assert compiled_line(chain, 3, "", "complete", t, b"w", b"") == python_line(
        chain, 3, "", "complete", t, b"w", b""
    )


def test_t_of_every_microsecond_of_the_first_seconds_is_repr() -> None:
    assert fmt.new_sealer is not None
    sealer = fmt.new_sealer(None)
    for micros in [*range(0, 2_000_000, 7), *range(999_999_000_000, 999_999_010_000)]:
        t = micros / 1_000_000
        sealed = sealer.seal(0, "", "x", t, b"", b"", 1 << 20)
        assert sealed is not None
        assert sealed[0].startswith(b'{"seq":0,"prev":"","kind":"x","t":%a,"wall":""' % t), t


@settings(max_examples=300, deadline=None)
@given(seq=st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_seq_is_written_as_python_writes_it(seq: int) -> None:
    chain = Chain(None, ChainHash.SHA256)
    assert compiled_line(chain, seq, "", "x", 1.0, b"w", b"") == python_line(
        chain, seq, "", "x", 1.0, b"w", b""
    )


@pytest.mark.parametrize("key", KEYS)
def test_the_digest_is_sha256_or_hmac_sha256_of_the_content(key: bytes | None) -> None:
    chain = Chain(key, ChainHash.SHA256)
    sealed = compiled_line(chain, 7, "ab" * 32, "statement", 1.5, b"w", b'"sql":"SELECT 1"')
    assert sealed is not None
    line, digest = sealed
    split = split_line(line)
    assert split is not None
    assert split[1] == digest
    content = split[0]
    expected = (
        hashlib.sha256(content).hexdigest()
        if key is None
        else hmac.new(key, content, hashlib.sha256).hexdigest()
    )
    assert digest == expected
    assert orjson.loads(line)["t"] == 1.5


def test_records_at_the_blake3_size_are_left_to_the_python_path() -> None:
    chain = Chain(b"k" * 32, ChainHash.SHA256_BLAKE3)
    assert chain.sealer_below == BULK_RECORD_BYTES
    small = b'"sql":"' + b"x" * 100 + b'"'
    assert compiled_line(chain, 1, "", "statement", 0.0, b"w", small) is not None
    large = b'"sql":"' + b"x" * BULK_RECORD_BYTES + b'"'
    assert compiled_line(chain, 1, "", "statement", 0.0, b"w", large) is None
    # under SHA-256 alone every record is the sealer's
    sha_only = Chain(b"k" * 32, ChainHash.SHA256)
    assert compiled_line(sha_only, 1, "", "statement", 0.0, b"w", large) is not None


def test_blake3_alone_has_no_sealer() -> None:
    assert Chain(b"k" * 32, ChainHash.BLAKE3).sealer is None


def test_bad_arguments_are_refused() -> None:
    assert fmt.new_sealer is not None
    with pytest.raises(ValueError, match="64 bytes"):
        fmt.new_sealer(b"short")
    sealer = fmt.new_sealer(None)
    with pytest.raises(ValueError, match="ASCII"):
        sealer.seal(0, "é", "statement", 0.0, b"w", b"", 100)
    with pytest.raises(ValueError, match="ASCII"):
        sealer.seal(0, "", "stätement", 0.0, b"w", b"", 100)
    with pytest.raises(TypeError):
        sealer.seal(0, "", "statement", 0.0, "w", b"", 100)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sealer.seal(0, "", "statement")  # type: ignore[call-arg]


def test_a_log_written_through_the_sealer_verifies(tmp_path: Path) -> None:
    context = SessionContext(
        session_id="sealed-1",
        identity=Identity(user="alice", groups=("dba",)),
        connection="db",
        protocol=Protocol.POSTGRES,
        client_addr="127.0.0.1",
    )
    key = b"0123456789abcdef0123456789abcdef"
    path = tmp_path / "sealed-1.slog"
    with Recorder.open(path, context, key=key, max_bytes=1 << 30) as recorder:
        for n in range(50):
            recorder.statement(f"SELECT {n}", origin="simple")
            recorder.rows(["n"], [[str(n)]])
            recorder.complete("SELECT 1")
        recorder.statement("SELECT '" + "y" * 8000 + "'", origin="simple")  # BLAKE3-sized
        recorder.complete("SELECT 1")
    report = verify(path, key=key)
    assert report.ok, report
    assert report.sealed
    lines = path.read_bytes().splitlines()
    assert report.records == len(lines) > 100
    assert any(len(line) > BULK_RECORD_BYTES for line in lines)  # one went through BLAKE3
