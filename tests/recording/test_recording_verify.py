from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.recording import Problem, verify
from sluice.recording.format import BULK_RECORD_BYTES, Chain, ChainHash, MacAlgorithm, key_id

from .recording_helpers import KEY, context, lines, make_log, parse, rechain, store


def _write(path: Path, chunks: list[bytes]) -> None:
    path.write_bytes(b"".join(chunks))


def test_intact(tmp_path: Path) -> None:
    report = verify(make_log(tmp_path))
    assert report.ok
    assert report.sealed
    assert report.records == 16
    assert report.session_id == "sess-1"
    assert report.problem is None
    assert "intact" in report.summary()


def test_edited_byte_in_record_5(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    raw = lines(path)
    assert b'"tag":"SELECT 2"' in raw[5]
    raw[5] = raw[5].replace(b"SELECT 2", b"SELECT 3")
    _write(path, raw)
    report = verify(path)
    assert not report.ok
    assert (report.problem, report.record, report.line) == (Problem.ALTERED, 5, 6)
    assert "record 5, line 6" in report.summary()


def test_edited_digest(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    raw = lines(path)
    raw[3] = raw[3][:-5] + (b"0" if raw[3][-5:-4] != b"0" else b"1") + raw[3][-4:]
    _write(path, raw)
    report = verify(path)
    assert (report.problem, report.record) == (Problem.ALTERED, 3)


def test_deleted_record(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    raw = lines(path)
    del raw[5]
    _write(path, raw)
    report = verify(path)
    assert (report.problem, report.record, report.line) == (Problem.MISSING, 5, 6)
    assert "record 5 missing" in report.detail


def test_deleted_records(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    raw = lines(path)
    del raw[5:8]
    _write(path, raw)
    report = verify(path)
    assert (report.problem, report.record) == (Problem.MISSING, 5)
    assert "records 5..7 missing" in report.detail


def test_reordered_records(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    raw = lines(path)
    raw[5], raw[6] = raw[6], raw[5]
    _write(path, raw)
    report = verify(path)
    assert (report.problem, report.record, report.line) == (Problem.REORDERED, 5, 6)
    assert "swapped" in report.detail


def test_duplicated_record(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    raw = lines(path)
    raw.insert(5, raw[4])
    _write(path, raw)
    report = verify(path)
    assert (report.problem, report.record) == (Problem.REORDERED, 5)


def test_truncated_mid_record(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    data = path.read_bytes()
    cut = sum(map(len, lines(path)[:9])) + 20
    path.write_bytes(data[:cut])
    report = verify(path)
    assert (report.problem, report.record, report.line) == (Problem.TRUNCATED, 9, 10)


def test_truncated_at_record_boundary(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    _write(path, lines(path)[:9])
    report = verify(path)
    assert (report.problem, report.record) == (Problem.UNSEALED, 9)
    assert not report.sealed


def test_seal_dropped(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    _write(path, lines(path)[:-1])
    report = verify(path)
    assert (report.problem, report.record) == (Problem.UNSEALED, 15)
    assert "without a seal" in report.detail


def test_data_after_seal(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    raw = lines(path)
    _write(path, [*raw, raw[1]])
    report = verify(path)
    assert (report.problem, report.line) == (Problem.TRAILING_DATA, 17)
    path.write_bytes(b"".join(raw) + b"\n")
    assert verify(path).problem == Problem.TRAILING_DATA


def test_forged_seal_counts(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    objs = parse(path)
    del objs[5]
    path.write_bytes(rechain(objs))  # plain chain rebuilt, seal counts fixed too
    # Without a key anyone can rebuild a plain chain: that is why keys exist.
    assert verify(path).ok


@pytest.mark.parametrize("chain_hash", list(ChainHash))
def test_forger_without_key_keeps_hmac_header(tmp_path: Path, chain_hash: ChainHash) -> None:
    path = make_log(tmp_path, key=KEY, hash=chain_hash)
    objs = parse(path)
    objs[5]["tag"] = "SELECT 0"
    forged = rechain(objs)  # unkeyed digests, header still names the keyed chain
    path.write_bytes(forged)
    report = verify(path, key=KEY)
    assert (report.problem, report.record) == (Problem.ALTERED, 0)
    assert "without the key" in report.detail


@pytest.mark.parametrize("unkeyed", ["sha256", "blake3", "sha256+blake3"])
@pytest.mark.parametrize("chain_hash", list(ChainHash))
def test_forger_without_key_downgrades_to_plain(
    tmp_path: Path, chain_hash: ChainHash, unkeyed: str
) -> None:
    path = make_log(tmp_path, key=KEY, hash=chain_hash)
    objs = parse(path)
    objs[0]["mac"], objs[0]["key_id"] = unkeyed, None
    objs[5]["tag"] = "SELECT 0"
    path.write_bytes(rechain(objs))
    assert verify(path).ok  # a consistent unkeyed chain, as anyone can make
    report = verify(path, key=KEY)
    assert (report.problem, report.record) == (Problem.NOT_AUTHENTICATED, 0)


def test_forger_with_wrong_key(tmp_path: Path) -> None:
    other = b"another-key-of-32-bytes-length!!"
    path = make_log(tmp_path, key=KEY)
    objs = parse(path)
    objs[5]["tag"] = "SELECT 0"
    path.write_bytes(rechain(objs, key=other))  # header still names the real key
    report = verify(path, key=KEY)
    assert (report.problem, report.record) == (Problem.ALTERED, 0)
    objs[0]["key_id"] = key_id(other)
    path.write_bytes(rechain(objs, key=other))
    report = verify(path, key=KEY)
    assert (report.problem, report.record) == (Problem.WRONG_KEY, 0)


def test_keyed_log_needs_the_key(tmp_path: Path) -> None:
    report = verify(make_log(tmp_path, key=KEY))
    assert (report.problem, report.record) == (Problem.KEY_REQUIRED, 0)


def test_hmac_keyed_log_edited(tmp_path: Path) -> None:
    path = make_log(tmp_path, key=KEY)
    raw = lines(path)
    raw[5] = raw[5].replace(b"SELECT 2", b"SELECT 3")
    _write(path, raw)
    report = verify(path, key=KEY)
    assert (report.problem, report.record, report.line) == (Problem.ALTERED, 5, 6)


def test_empty_missing_and_garbage(tmp_path: Path) -> None:
    empty = tmp_path / "e.slog"
    empty.write_bytes(b"")
    assert verify(empty).problem == Problem.EMPTY
    assert verify(tmp_path / "nope.slog").problem == Problem.UNREADABLE
    garbage = tmp_path / "g.slog"
    garbage.write_bytes(b"hello\n")
    assert (verify(garbage).problem, verify(garbage).line) == (Problem.MALFORMED, 1)


def test_first_record_must_be_start(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    _write(path, lines(path)[1:])
    report = verify(path)
    assert (report.problem, report.record, report.line) == (Problem.MALFORMED, 0, 1)


# -- fuzz ---------------------------------------------------------------------------

_TEMPLATE: dict[str, bytes] = {}


def _template(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if "log" not in _TEMPLATE:
        _TEMPLATE["log"] = make_log(tmp_path_factory.mktemp("tpl")).read_bytes()
    return _TEMPLATE["log"]


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 400)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("swap"), st.integers(0, 100), st.integers(0, 100)),
    st.tuples(st.just("dup"), st.integers(0, 100), st.integers(0, 100)),
)


def _mutate(data: bytes, op: tuple[str, int, object]) -> bytes:
    kind, a, b = op
    if kind == "flip":
        i = a % len(data)
        assert isinstance(b, int)
        return data[:i] + bytes([data[i] ^ b]) + data[i + 1 :]
    if kind == "delete":
        i = a % len(data)
        assert isinstance(b, int)
        return data[:i] + data[i + b :]
    if kind == "insert":
        i = a % (len(data) + 1)
        assert isinstance(b, bytes)
        return data[:i] + b + data[i:]
    if kind == "truncate":
        return data[: a % len(data)]
    rows = data.splitlines(keepends=True)
    assert isinstance(b, int)
    i, j = a % len(rows), b % len(rows)
    if kind == "swap":
        rows[i], rows[j] = rows[j], rows[i]
    else:
        rows.insert(j, rows[i])
    return b"".join(rows)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(_mutation, min_size=1, max_size=3))
def test_fuzz_mutations_are_never_intact(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, object]]
) -> None:
    original = _template(tmp_path_factory)
    data = original
    for op in ops:
        data = _mutate(data, op) if data else data
    path = tmp_path_factory.mktemp("fuzz") / "m.slog"
    path.write_bytes(data)
    report = verify(path)
    assert report.problem != Problem.INTERNAL, report.detail
    assert report.ok == (data == original)
    if not report.ok:
        assert report.problem is not None
        assert report.detail


@settings(max_examples=100, deadline=None)
@given(
    obj=st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=10,
        ),
    )
)
def test_fuzz_json_records_never_crash(
    tmp_path_factory: pytest.TempPathFactory, obj: dict[str, object]
) -> None:
    original = _template(tmp_path_factory)
    first = original.splitlines(keepends=True)[0]
    line = json.dumps(obj).encode()[:-1] + b',"h":"' + b"a" * 64 + b'"}\n'
    path = tmp_path_factory.mktemp("fuzzj") / "j.slog"
    path.write_bytes(first + line)
    report = verify(path)
    assert not report.ok
    assert report.problem != Problem.INTERNAL


@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=16, max_size=200), data=st.binary(max_size=300))
def test_chain_digests_are_hmac_sha256(key: bytes, data: bytes) -> None:
    """The precomputed HMAC states give RFC 2104's HMAC (keys longer than a
    block are hashed first), so any HMAC-SHA256 implementation can verify."""
    assert (
        Chain(key, ChainHash.SHA256).digest(data) == hmac.new(key, data, hashlib.sha256).hexdigest()
    )
    assert Chain(None, ChainHash.SHA256).digest(data) == hashlib.sha256(data).hexdigest()


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=200),
    parts=st.lists(st.binary(max_size=3000), max_size=4),
)
def test_chain_digests_are_keyed_blake3(key: bytes, parts: list[bytes]) -> None:
    """BLAKE3's keyed mode under a key derived by BLAKE3's own key derivation
    (docs/recording-format.md), so any BLAKE3 implementation can verify; a
    record hashed in pieces has the digest of the whole."""
    derived = blake3.blake3(key, derive_key_context="sluice-recording/1 chain key").digest()
    whole = b"".join(parts)
    keyed = Chain(key, ChainHash.BLAKE3)
    assert keyed.digest(whole) == blake3.blake3(whole, key=derived).hexdigest()
    assert keyed.digest_parts(tuple(parts)) == keyed.digest(whole)
    assert Chain(None, ChainHash.BLAKE3).digest(whole) == blake3.blake3(whole).hexdigest()
    assert keyed.algorithm == MacAlgorithm.BLAKE3_KEYED


@pytest.mark.parametrize("chain_hash", list(ChainHash))
@pytest.mark.parametrize("key", [None, KEY])
def test_each_chain_hash_verifies_and_names_itself(
    tmp_path: Path, chain_hash: ChainHash, key: bytes | None
) -> None:
    path = make_log(tmp_path, key=key, hash=chain_hash)
    start = parse(path)[0]
    expected = {
        (ChainHash.BLAKE3, False): "blake3",
        (ChainHash.BLAKE3, True): "blake3-keyed",
        (ChainHash.SHA256, False): "sha256",
        (ChainHash.SHA256, True): "hmac-sha256",
        (ChainHash.SHA256_BLAKE3, False): "sha256+blake3",
        (ChainHash.SHA256_BLAKE3, True): "hmac-sha256+blake3-keyed",
    }[chain_hash, key is not None]
    assert start["mac"] == expected
    report = verify(path, key=key)
    assert report.ok, report.summary()
    assert report.algorithm == expected
    assert expected in report.summary()


@settings(max_examples=300, deadline=None)
@given(
    key=st.one_of(st.none(), st.binary(min_size=16, max_size=200)),
    parts=st.lists(st.binary(max_size=2500), max_size=4),
)
def test_mixed_chain_hashes_by_size(key: bytes | None, parts: list[bytes]) -> None:
    """`sha256+blake3`: a record under BULK_RECORD_BYTES has the SHA-256 chain's
    digest, a larger one the BLAKE3 chain's, however it is split in pieces."""
    whole = b"".join(parts)
    mixed = Chain(key, ChainHash.SHA256_BLAKE3)
    pure = Chain(key, ChainHash.BLAKE3 if len(whole) >= BULK_RECORD_BYTES else ChainHash.SHA256)
    assert mixed.digest_parts(tuple(parts)) == pure.digest(whole)
    assert mixed.algorithm == (
        MacAlgorithm.SHA256_BLAKE3 if key is None else MacAlgorithm.HMAC_SHA256_BLAKE3_KEYED
    )


@pytest.mark.parametrize("key", [None, KEY])
def test_mixed_chain_splits_by_size(tmp_path: Path, key: bytes | None) -> None:
    """Under `sha256+blake3` the verifier hashes each record by its size: a
    log chained wholly with SHA-256, or wholly with BLAKE3, under that name
    fails at its first record hashed the other way."""
    rec = store(tmp_path, key=key, hash=ChainHash.SHA256_BLAKE3).open(context())
    rec.statement("SELECT id, notes FROM customers", origin="simple")  # 1
    rec.columns(["id", "notes"], ["int4", "text"])  # 2
    rec.rows(["id", "notes"], [[str(i), "n" * 500] for i in range(20)])  # 3: about 10 KB
    rec.complete("SELECT 20")  # 4
    rec.end(reason="client closed")  # 5 end, 6 seal
    path = rec.path
    sizes = [len(line) for line in lines(path)]
    assert sizes[3] > BULK_RECORD_BYTES > max(sizes[:3] + sizes[4:])
    report = verify(path, key=key)
    assert report.ok, report.summary()
    objs = parse(path)
    for single, first_wrong in ((ChainHash.SHA256, 3), (ChainHash.BLAKE3, 0)):
        path.write_bytes(rechain(objs, key=key, hash=single))
        report = verify(path, key=key)
        assert (report.problem, report.record) == (Problem.ALTERED, first_wrong), single
