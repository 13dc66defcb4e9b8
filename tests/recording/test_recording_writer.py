from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pytest
import yaml

from sluice.errors import ConfigError
from sluice.policy.verdict import Allow, RequireApproval
from sluice.protocols.postgres.messages import encode_data_row
from sluice.recording import (
    Recorder,
    RecordingError,
    RecordingSpec,
    RecordingStore,
    RecordKind,
    replay,
    verify,
    writer,
)
from sluice.recording.format import MAX_RECORD_BYTES
from sluice.recording.records import (
    ApprovalRecord,
    CapRecord,
    CompleteRecord,
    EndRecord,
    ErrorRecord,
    OmittedRecord,
    ResultRecord,
    RowsRecord,
    SealRecord,
    StartRecord,
    StatementRecord,
    VerdictRecord,
)

from .recording_helpers import KEY, context, lines, make_log, parse, store, write_session


def test_round_trip(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    records = list(replay(path))
    assert [r.seq for r in records] == list(range(16))
    kinds = [type(r).__name__ for r in records]
    assert kinds[0] == "StartRecord"
    assert kinds[-2:] == ["EndRecord", "SealRecord"]
    start = records[0]
    assert isinstance(start, StartRecord)
    assert (start.session_id, start.user, start.groups) == ("sess-1", "alice", ("dba", "oncall"))
    assert (start.connection, start.protocol, start.client_addr) == (
        "prod-db",
        "postgres",
        "10.0.0.7:51234",
    )
    assert start.mac == "sha256+blake3"  # the default
    assert start.key_id is None
    stmt = records[1]
    assert isinstance(stmt, StatementRecord)
    assert stmt.sql == "SELECT id, email FROM users"
    verdict = records[2]
    assert isinstance(verdict, VerdictRecord)
    assert (verdict.verdict, verdict.rule, verdict.mask_profiles) == (
        "allow",
        "read-only",
        ("email",),
    )
    result = records[3]
    assert isinstance(result, ResultRecord)
    assert [(c.name, c.type) for c in result.columns] == [("id", "int4"), ("email", "text")]
    rows = records[4]
    assert isinstance(rows, RowsRecord)
    assert rows.rows == (("1", "a***@example.com"), ("2", None))
    assert isinstance(records[5], CompleteRecord)
    assert records[5].tag == "SELECT 2"
    blocked = records[7]
    assert isinstance(blocked, VerdictRecord)
    assert blocked.reason == "DDL is not allowed"
    assert isinstance(records[8], ErrorRecord)
    assert records[8].source == "gateway"
    parse_stmt = records[9]
    assert isinstance(parse_stmt, StatementRecord)
    assert parse_stmt.statement_name == "s1"
    approved = records[11]
    assert isinstance(approved, ApprovalRecord)
    assert approved.actor == "bob"
    end = records[14]
    assert isinstance(end, EndRecord)
    assert (end.reason, end.bytes_in, end.bytes_out, end.statements) == (
        "client closed",
        123,
        456,
        3,
    )
    assert (end.rows_recorded, end.rows_dropped) == (2, 0)
    seal = records[15]
    assert isinstance(seal, SealRecord)
    assert seal.records == 15
    # timing: monotonic offsets from the start, non-decreasing; wall clock in UTC
    assert [r.t for r in records] == sorted(r.t for r in records)
    assert all(r.wall.utcoffset() is not None for r in records)
    assert verify(path).ok


def test_keyed_log_verifies_only_with_the_key(tmp_path: Path) -> None:
    path = make_log(tmp_path, key=KEY)
    report = verify(path, key=KEY)
    assert report.ok
    assert report.authenticated
    assert report.records == 16
    assert not verify(path).ok


def test_statement_reaches_the_os_before_returning(tmp_path: Path) -> None:
    rec = store(tmp_path).open(context())
    rec.statement("SELECT 42", origin="simple")
    assert b"SELECT 42" in rec.path.read_bytes()
    rec.verdict(RequireApproval(rule="prod-writes", reason="r", approver_groups=("dba",)))
    assert b"require_approval" in rec.path.read_bytes()
    rec.rows(["a"], [["buffered-row"]])
    rec.complete("SELECT 1")
    assert b"buffered-row" not in rec.path.read_bytes()  # rows are batched ...
    rec.statement("SELECT 43", origin="simple")
    data = rec.path.read_bytes()
    assert data.index(b"buffered-row") < data.index(b"SELECT 43")  # ... and kept in order
    rec.end(reason="done")
    assert verify(rec.path).ok


def test_log_file_is_private(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_size_cap_stops_rows_but_not_statements(tmp_path: Path) -> None:
    st = store(tmp_path, max_bytes_per_session=64 * 1024)
    rec = st.open(context())
    rec.statement("SELECT * FROM big", origin="simple")
    rec.verdict(Allow(rule="r"))
    for i in range(200):
        rec.rows(["n", "pad"], [[str(i), "x" * 1000]])
    rec.complete("SELECT 200")
    assert rec.capped
    rec.statement("SELECT 2", origin="simple")
    rec.verdict(Allow(rule="r"))
    rec.rows(["n", "pad"], [["more", "y"]])
    rec.end(reason="done")
    records = list(replay(rec.path))
    caps = [r for r in records if isinstance(r, CapRecord)]
    assert len(caps) == 1
    assert caps[0].limit_bytes == 64 * 1024
    assert sum(isinstance(r, StatementRecord) for r in records) == 2
    assert sum(isinstance(r, VerdictRecord) for r in records) == 2
    recorded = sum(len(r.rows) for r in records if isinstance(r, RowsRecord))
    end = next(r for r in records if isinstance(r, EndRecord))
    assert end.rows_recorded == recorded
    assert 0 < recorded < 200
    assert end.rows_dropped == 201 - recorded
    assert rec.path.stat().st_size < 64 * 1024 + 4096
    assert verify(rec.path).ok


def test_row_larger_than_a_record_is_omitted(tmp_path: Path) -> None:
    st = store(tmp_path, max_bytes_per_session=64 * 1024 * 1024)
    rec = st.open(context())
    rec.rows(["blob"], [["small"], ["z" * (MAX_RECORD_BYTES + 10)], ["small2"]])
    rec.end(reason="done")
    records = list(replay(rec.path))
    omitted = [r for r in records if isinstance(r, OmittedRecord)]
    assert len(omitted) == 1
    assert omitted[0].rows == 1
    kept = [row for r in records if isinstance(r, RowsRecord) for row in r.rows]
    assert kept == [("small",), ("small2",)]
    assert verify(rec.path).ok


def _disk_full(rec: Recorder) -> None:
    """From now on every write to the log fails with ENOSPC, as on a full disk."""
    full = os.open("/dev/full", os.O_WRONLY)
    assert rec._fd is not None
    os.dup2(full, rec._fd)
    os.close(full)


def test_write_failure_fails_closed(tmp_path: Path) -> None:
    failures: list[tuple[str, RecordingError]] = []
    st = RecordingStore(
        RecordingSpec(dir=tmp_path), on_failure=lambda sid, err: failures.append((sid, err))
    )
    rec = st.open(context())
    _disk_full(rec)
    with pytest.raises(RecordingError) as info:
        rec.statement("DELETE FROM t", origin="simple")
    assert info.value.sqlstate == "58030"
    assert "No space left" in info.value.message
    assert [sid for sid, _ in failures] == ["sess-1"]
    with pytest.raises(RecordingError):  # stays failed: no statement goes unrecorded
        rec.statement("SELECT 1", origin="simple")
    rec.end(reason="x")  # ending a failed log does not raise again


def test_write_failure_not_required_disables(tmp_path: Path) -> None:
    failures: list[str] = []
    st = RecordingStore(
        RecordingSpec(dir=tmp_path, required=False),
        on_failure=lambda sid, err: failures.append(sid),
    )
    rec = st.open(context())
    _disk_full(rec)
    rec.statement("DELETE FROM t", origin="simple")
    rec.statement("SELECT 1", origin="simple")
    rec.end(reason="done")
    assert failures == ["sess-1"]
    assert rec.failed is not None


def test_open_failure(tmp_path: Path) -> None:
    st = store(tmp_path)
    st.open(context()).end(reason="done")
    with pytest.raises(RecordingError, match="cannot write session log"):
        st.open(context())  # the same session id twice: never overwrite a log
    relaxed = store(tmp_path, required=False)
    rec = relaxed.open(context())
    assert rec.failed is not None
    rec.statement("SELECT 1", origin="simple")  # records nothing, does not raise


@pytest.mark.parametrize("bad", ["../etc/passwd", ".hidden", "a/b", "", "x" * 200])
def test_session_id_must_be_a_file_name(tmp_path: Path, bad: str) -> None:
    with pytest.raises(RecordingError, match="invalid session id"):
        store(tmp_path).path_for(bad)


def test_calls_after_end_are_refused(tmp_path: Path) -> None:
    rec = store(tmp_path).open(context())
    rec.end(reason="done")
    rec.end(reason="again")  # idempotent
    with pytest.raises(RecordingError, match="already sealed"):
        rec.statement("SELECT 1", origin="simple")


def test_context_manager_seals(tmp_path: Path) -> None:
    with store(tmp_path).open(context()) as rec:
        rec.statement("SELECT 1", origin="simple")
    assert verify(rec.path).ok
    assert parse(rec.path)[-2]["reason"] == "closed"


def test_key_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TEST_REC_KEY", KEY.decode())
    st = RecordingStore(RecordingSpec(dir=tmp_path, hmac_key="env:SLUICE_TEST_REC_KEY"))
    assert st.keyed
    rec = st.open(context())
    write_session_short(rec)
    assert st.verify("sess-1").ok
    assert st.verify("sess-1").authenticated
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    assert (
        RecordingStore(RecordingSpec(dir=tmp_path, hmac_key=f"file:{key_file}")).verify("sess-1").ok
    )
    monkeypatch.setenv("SLUICE_TEST_REC_KEY", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        RecordingStore(RecordingSpec(dir=tmp_path, hmac_key="env:SLUICE_TEST_REC_KEY"))
    monkeypatch.delenv("SLUICE_TEST_REC_KEY")
    with pytest.raises(ConfigError, match="not set"):
        RecordingStore(RecordingSpec(dir=tmp_path, hmac_key="env:SLUICE_TEST_REC_KEY"))
    with pytest.raises(ValueError, match="reference"):
        RecordingSpec(hmac_key="literal-key-in-config")


def write_session_short(rec: Recorder) -> None:
    rec.statement("SELECT 1", origin="simple")
    rec.end(reason="done")


def test_store_lists_and_replays(tmp_path: Path) -> None:
    st = store(tmp_path)
    for sid in ("a1", "b2"):
        write_session(st.open(context(sid)))
    (st.dir / "notes.txt").write_text("x")
    assert sorted(st.sessions()) == ["a1", "b2"]
    assert next(iter(st.replay("a1"))).seq == 0
    assert st.verify("b2").ok


def test_every_line_is_one_record(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    raw = lines(path)
    assert len(raw) == 16
    assert all(line.endswith(b'"}\n') for line in raw)
    assert [o["kind"] for o in parse(path)][:3] == [
        RecordKind.START,
        RecordKind.STATEMENT,
        RecordKind.VERDICT,
    ]
    assert os.path.getsize(path) == sum(map(len, raw))


def test_documented_yaml_example_is_valid() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "recording-format.md"
    block = re.search(r"```yaml\n(recording:.*?)```", doc.read_text(), re.S)
    assert block is not None
    spec = RecordingSpec.model_validate(yaml.safe_load(block.group(1))["recording"])
    assert spec.max_bytes_per_session == 64 * 1024 * 1024
    assert spec.hmac_key == "env:SLUICE_RECORDING_KEY"


def test_wire_rows_round_trip_text_and_binary(tmp_path: Path) -> None:
    from sluice.protocols.postgres.messages import encode_data_row
    from sluice.recording import replay, verify
    from sluice.recording.records import RowsRecord

    st = store(tmp_path)
    rows: list[list[bytes | None]] = [[b"alice", b"\x00\x01", None], [b"bob", b"\xff", b"x"]] * 3000
    data = b"".join(encode_data_row(r) for r in rows)  # ~70 KiB: split into records
    rec = st.open(context())
    rec.wire_rows(["name", "blob", "note"], [0, 1, 0], data, len(rows))
    rec.complete("SELECT 6000")
    rec.end(reason="client_terminated")
    path = st.path_for("sess-1")
    assert verify(path).ok
    decoded = [row for r in replay(path) if isinstance(r, RowsRecord) for row in r.rows]
    assert len(decoded) == 6000
    assert decoded[:2] == [("alice", "\\x0001", None), ("bob", "\\xff", "x")]


def test_wire_rows_respect_the_size_cap(tmp_path: Path) -> None:
    from sluice.protocols.postgres.messages import encode_data_row

    st = store(tmp_path, max_bytes_per_session=64 * 1024)
    rec = st.open(context())
    row = encode_data_row([b"y" * 1000])
    for _ in range(200):
        rec.wire_rows(["c"], [0], row * 10, 10)
    rec.statement("SELECT 2", origin="simple")
    rec.end(reason="client_terminated")
    assert rec.capped
    assert os.path.getsize(st.path_for("sess-1")) < 80 * 1024


def test_statement_with_its_verdict_and_small_result_with_its_completion_share_records(
    tmp_path: Path,
) -> None:
    """The hot path's two records per round trip read back as the four they stand for."""
    from sluice.protocols.postgres.messages import encode_data_row

    st = store(tmp_path)
    rec = st.open(context())
    verdict = RequireApproval(rule="prod-writes", reason="r", approver_groups=("dba",))
    rec.statement("SELECT 42", origin="simple", verdict=verdict)
    rows: list[list[bytes | None]] = [[b"42"], [None]]
    rec.wire_rows(["answer"], [0], b"".join(encode_data_row(r) for r in rows), 2)
    rec.complete("SELECT 2")
    rec.end(reason="client_terminated")
    path = st.path_for("sess-1")
    assert verify(path).ok
    raw = [record["kind"] for record in parse(path)]
    assert raw == ["start", "statement", "result", "complete", "end", "seal"]
    records = list(replay(path))
    assert [type(r).__name__ for r in records] == [
        "StartRecord",
        "StatementRecord",
        "VerdictRecord",
        "ResultRecord",
        "RowsRecord",
        "CompleteRecord",
        "EndRecord",
        "SealRecord",
    ]
    statement, judged, _, rows_record, complete = records[1:6]
    assert isinstance(statement, StatementRecord)
    assert statement.sql == "SELECT 42"
    assert isinstance(judged, VerdictRecord)
    assert (judged.verdict, judged.rule, judged.approver_groups) == (
        "require_approval",
        "prod-writes",
        ("dba",),
    )
    assert judged.seq == statement.seq
    assert isinstance(rows_record, RowsRecord)
    assert rows_record.rows == (("42",), (None,))
    assert isinstance(complete, CompleteRecord)
    assert complete.tag == "SELECT 2"
    end = records[-2]
    assert isinstance(end, EndRecord)
    assert end.rows_recorded == 2


def test_a_completion_whose_rows_pass_the_cap_is_recorded_without_them(tmp_path: Path) -> None:
    from sluice.protocols.postgres.messages import encode_data_row

    st = store(tmp_path, max_bytes_per_session=64 * 1024)
    rec = st.open(context())
    rec.statement("SELECT big", origin="simple", verdict=Allow(rule="r"))
    rec.wire_rows(["c"], [0], encode_data_row([b"y" * 60_000]), 1)
    rec.complete("SELECT 1")
    rec.end(reason="client_terminated")
    path = st.path_for("sess-1")
    assert verify(path).ok
    records = list(replay(path))
    assert not any(isinstance(r, RowsRecord) for r in records)
    assert any(isinstance(r, CapRecord) for r in records)
    complete = [r for r in records if isinstance(r, CompleteRecord)]
    assert [c.tag for c in complete] == ["SELECT 1"]
    end = records[-2]
    assert isinstance(end, EndRecord)
    assert (end.rows_recorded, end.rows_dropped) == (0, 1)


def test_large_rows_records_written_in_pieces_verify_with_the_key(tmp_path: Path) -> None:
    """Records past the write buffer are hashed and written piece by piece."""
    from sluice.protocols.postgres.messages import encode_data_row
    from sluice.recording import replay
    from sluice.recording.records import RowsRecord

    st = store(tmp_path, key=KEY)
    rows: list[list[bytes | None]] = [[b"%06d" % i, b"z" * 300] for i in range(3000)]  # 0.9 MB
    rec = st.open(context())
    rec.wire_rows(["id", "note"], [0, 0], b"".join(encode_data_row(r) for r in rows), len(rows))
    rec.complete("SELECT 3000")
    rec.end(reason="client_terminated")
    path = st.path_for("sess-1")
    report = verify(path, key=KEY)
    assert report.ok
    assert report.authenticated
    assert not verify(path, key=b"another key, another chain......").ok
    assert os.path.getsize(path) > 16 * 64 * 1024  # far past the write buffer
    decoded = [row for r in replay(path) if isinstance(r, RowsRecord) for row in r.rows]
    assert decoded == [(f"{i:06d}", "z" * 300) for i in range(3000)]


def test_a_records_wall_clock_text_is_its_millisecond_in_iso_8601() -> None:
    """The cached text follows the clock: a new millisecond, a new second, back again."""
    stamps = [
        1_733_529_600_000_000_000,
        1_733_529_600_000_999_999,  # the same millisecond
        1_733_529_600_999_000_000,
        1_733_529_601_007_000_001,  # the next second
        1_733_529_600_042_000_000,  # back (the clock was stepped)
        0,
    ]
    for nanos in stamps:
        seconds, rest = divmod(nanos, 1_000_000_000)
        expected = dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(
            milliseconds=rest // 1_000_000
        )
        text = writer._wall_text(nanos // 1_000_000)
        assert text == expected.isoformat(timespec="milliseconds").encode()
    now = dt.datetime.now(dt.UTC)
    wall = dt.datetime.fromisoformat(writer._now_wall().decode())
    assert wall.utcoffset() == dt.timedelta(0)
    assert abs(wall - now) < dt.timedelta(seconds=5)  # the clock's, not a cached one


def test_writes_cut_short_by_the_os_are_completed_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write(2) may write less than asked (a signal, a disk filling up): the
    writer sends the rest, so the log still verifies record by record."""
    st = store(tmp_path)
    rec = st.open(context())
    path = st.path_for("sess-1")
    real_write = os.write
    calls: list[int] = []

    def trickle(fd: int, data: bytes | bytearray | memoryview) -> int:
        if os.readlink(f"/proc/self/fd/{fd}") == str(path):
            calls.append(len(data))
            return real_write(fd, bytes(data[:7]))
        return real_write(fd, data)

    def trickle_parts(fd: int, parts: list[bytes]) -> int:
        return trickle(fd, b"".join(parts))

    monkeypatch.setattr(os, "write", trickle)
    monkeypatch.setattr(os, "writev", trickle_parts)
    rec.wire_rows(["id", "note"], [0, 0], encode_data_row([b"1", b"a note"]) * 3, 3)
    rec.complete("SELECT 3")
    write_session(rec)
    monkeypatch.undo()
    assert len(calls) > 20  # records went out seven bytes at a time
    report = verify(path)
    assert report.ok, report
    assert report.records == len(lines(path))
