"""COPY data in the session log: gathered, chunked, capped, replayed byte for byte."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from rich.console import Console

from sluice.recording import RecordingError, RecordingFormatError, render_replay, replay, verify
from sluice.recording.format import FORMAT_VERSION
from sluice.recording.records import (
    CapRecord,
    CompleteRecord,
    CopyRecord,
    EndRecord,
    StatementRecord,
    parse_record,
)
from sluice.recording.writer import WIRE_CHUNK_BYTES

from .recording_helpers import context, parse, store


def _copies(path: Path, direction: str | None = None) -> list[CopyRecord]:
    return [
        r
        for r in replay(path)
        if isinstance(r, CopyRecord) and (direction is None or r.direction == direction)
    ]


def test_copy_data_round_trips_exactly_and_in_order(tmp_path: Path) -> None:
    st = store(tmp_path)
    rec = st.open(context())
    lines = [f"{i}\tname {i}\t\\N\n".encode() for i in range(20_000)]
    rec.statement("COPY t TO STDOUT", origin="simple")
    for line in lines:  # one CopyData per row, as PostgreSQL sends them
        rec.copy_data("out", line)
    rec.complete("COPY 20000")
    rec.statement("COPY t FROM STDIN", origin="simple")
    inbound = b"1\tx\n2\t\xc3\xa9\x00\xff\n"
    rec.copy_data("in", inbound)
    rec.flush()
    rec.complete("COPY 2")
    rec.end(reason="client_terminated")
    path = st.path_for("sess-1")
    assert verify(path).ok

    out = _copies(path, "out")
    assert b"".join(r.data for r in out) == b"".join(lines)
    assert len(out) > 1  # about 400 KB: more than one record of WIRE_CHUNK_BYTES
    assert all(r.size == len(r.data) <= WIRE_CHUNK_BYTES for r in out)
    assert [r.data for r in _copies(path, "in")] == [inbound]

    completes = [r for r in replay(path) if isinstance(r, CompleteRecord)]
    assert [c.tag for c in completes] == ["COPY 20000", "COPY 2"]
    records = list(replay(path))
    # Every COPY record sits between its statement and its completion.
    for direction, sql, tag in (
        ("out", "COPY t TO STDOUT", "COPY 20000"),
        ("in", "COPY t FROM STDIN", "COPY 2"),
    ):
        positions = [
            i
            for i, r in enumerate(records)
            if isinstance(r, CopyRecord) and r.direction == direction
        ]
        started = next(
            i for i, r in enumerate(records) if isinstance(r, StatementRecord) and r.sql == sql
        )
        done = next(
            i for i, r in enumerate(records) if isinstance(r, CompleteRecord) and r.tag == tag
        )
        assert started < min(positions)
        assert max(positions) < done
    end = next(r for r in records if isinstance(r, EndRecord))
    assert end.copy_bytes_recorded == sum(len(x) for x in lines) + len(inbound)
    assert end.copy_bytes_dropped == 0
    assert parse(path)[0]["format"] == FORMAT_VERSION


def test_a_change_of_direction_starts_a_new_record(tmp_path: Path) -> None:
    st = store(tmp_path)
    rec = st.open(context())
    rec.copy_data("out", b"a\n")
    rec.copy_data("in", b"b\n")
    rec.copy_data("in", b"c\n")
    rec.end(reason="client_terminated")
    got = [(r.direction, r.data) for r in _copies(st.path_for("sess-1"))]
    assert got == [("out", b"a\n"), ("in", b"b\nc\n")]


def test_flush_hands_copy_data_to_the_os(tmp_path: Path) -> None:
    st = store(tmp_path)
    rec = st.open(context())
    rec.copy_data("in", b"secret-free line\n")
    path = st.path_for("sess-1")
    assert b'"copy"' not in path.read_bytes()
    rec.flush()
    assert b'"kind":"copy"' in path.read_bytes()
    rec.end(reason="client_terminated")


def test_copy_data_past_the_cap_is_counted_not_kept(tmp_path: Path) -> None:
    st = store(tmp_path, max_bytes_per_session=64 * 1024)
    rec = st.open(context())
    chunk = b"y" * 999 + b"\n"
    for _ in range(400):  # 400 KB of COPY data against a 64 KiB log
        rec.copy_data("out", chunk)
    rec.statement("SELECT 2", origin="simple")
    rec.end(reason="client_terminated")
    path = st.path_for("sess-1")
    assert rec.capped
    assert os.path.getsize(path) < 80 * 1024
    records = list(replay(path))
    assert sum(isinstance(r, CapRecord) for r in records) == 1
    assert any(isinstance(r, StatementRecord) and r.sql == "SELECT 2" for r in records)
    end = next(r for r in records if isinstance(r, EndRecord))
    kept = sum(r.size for r in records if isinstance(r, CopyRecord))
    assert end.copy_bytes_recorded == kept < 64 * 1024
    assert end.copy_bytes_recorded + end.copy_bytes_dropped == 400 * 1000


def test_omitted_copy_data_says_why(tmp_path: Path) -> None:
    st = store(tmp_path)
    rec = st.open(context())
    rec.copy_omitted("in", 1234, "binary COPY data cannot be masked, so it is not kept")
    rec.end(reason="client_terminated")
    path = st.path_for("sess-1")
    (copy,) = _copies(path)
    assert (copy.direction, copy.size, copy.data) == ("in", 1234, b"")
    assert copy.omitted is not None
    assert "binary" in copy.omitted
    end = next(r for r in replay(path) if isinstance(r, EndRecord))
    assert end.copy_bytes_dropped == 1234


def test_a_failed_write_of_copy_data_raises_when_required(tmp_path: Path) -> None:
    st = store(tmp_path)
    rec = st.open(context())
    rec.copy_data("in", b"1\n")
    os.close(rec._fd)  # type: ignore[arg-type]  # the next write fails (EBADF)
    with pytest.raises(RecordingError):
        rec.flush()
    with pytest.raises(RecordingError):
        rec.copy_data("in", b"2\n")


def test_replay_shows_copy_lines_safely_and_counts_the_rest(tmp_path: Path) -> None:
    st = store(tmp_path)
    rec = st.open(context())
    rec.statement("COPY t TO STDOUT", origin="simple")
    rec.copy_data("out", b"first\t\x1b[31mred\n")
    for i in range(300):
        rec.copy_data("out", f"line {i}\n".encode())
    rec.complete("COPY 301")
    rec.copy_omitted("in", 10, "binary COPY data cannot be masked, so it is not kept")
    rec.end(reason="client_terminated")
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render_replay(console, replay(st.path_for("sess-1")))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "COPY data to the client" in text
    assert "\\u001b[31mred" in text
    assert "\x1b" not in text
    assert "line 198" in text
    assert "line 199" not in text
    assert "... 101 more lines of COPY data not shown" in text
    assert "COPY data from the client not recorded (10 bytes)" in text
    assert "COPY 301" in text


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ({"direction": "sideways", "bytes": 0, "data": ""}, "direction"),
        ({"direction": "in", "bytes": 3, "data": "!!!!"}, "cannot be decoded"),
        ({"direction": "in", "bytes": 5, "data": "YWJj"}, "states 5 bytes but holds 3"),
        ({"direction": "in", "bytes": 3}, "'data'"),
        ({"direction": "out", "data": "YWJj"}, "'bytes'"),
        ({"direction": "out", "bytes": 3, "omitted": 7}, "'omitted'"),
    ],
)
def test_a_malformed_copy_record_is_reported_not_trusted(
    members: dict[str, object], problem: str
) -> None:
    record = {"seq": 3, "kind": "copy", "t": 0.5, "wall": "2026-01-01T00:00:00+00:00", **members}
    with pytest.raises(RecordingFormatError, match=re.escape(problem)):
        parse_record(record)
