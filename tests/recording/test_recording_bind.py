"""`bind` records: each execution of a prepared statement, with its parameters."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from sluice.recording import RecordingFormatError, render_replay, replay, verify
from sluice.recording.records import BindRecord, OmittedValue, parse_record

from .recording_helpers import context, store

PARAMS = [
    "plain text",
    None,
    {"binary": "AAAAKg=="},
    {"binary_text": "text sent in binary"},
    {"omitted": "a binary value that is not text cannot be masked", "bytes": 8},
]


def _binds(path: Path) -> list[BindRecord]:
    return [r for r in replay(path) if isinstance(r, BindRecord)]


def test_bind_records_round_trip_and_are_written_at_once(tmp_path: Path) -> None:
    st = store(tmp_path)
    rec = st.open(context())
    rec.statement("SELECT $1, $2, $3, $4, $5", origin="parse", statement_name="s1")
    rec.bind("s1", None, PARAMS)
    path = st.path_for("sess-1")
    assert b'"kind":"bind"' in path.read_bytes()  # handed to the OS before bind() returns
    rec.bind(None, "portal", [])
    rec.end(reason="client_terminated")
    assert verify(path).ok
    first, second = _binds(path)
    assert (first.statement_name, first.portal) == ("s1", None)
    assert first.params == (
        "plain text",
        None,
        b"\x00\x00\x00\x2a",
        "text sent in binary",
        OmittedValue(size=8, reason="a binary value that is not text cannot be masked"),
    )
    assert (second.statement_name, second.portal, second.params) == (None, "portal", ())


def test_past_the_cap_only_the_sizes_of_parameters_are_kept(tmp_path: Path) -> None:
    st = store(tmp_path, max_bytes_per_session=64 * 1024)
    rec = st.open(context())
    rec.statement("SELECT $1", origin="parse", statement_name="s1")
    rec.wire_rows(["x"], [0], b"D\x00\x00\x00\x0e\x00\x01\x00\x00\x00\x04abcd" * 20_000, 20_000)
    rec.complete("SELECT 20000")  # past the cap: the log is capped
    rec.bind("s1", None, ["caf\u00e9", None, {"binary": "AAAAKg=="}, {"binary_text": "ab"}])
    rec.end(reason="client_terminated")
    path = st.path_for("sess-1")
    (bind,) = _binds(path)
    reason = "the log reached its size cap"
    assert bind.params == (
        OmittedValue(size=5, reason=reason),
        None,
        OmittedValue(size=4, reason=reason),
        OmittedValue(size=2, reason=reason),
    )
    # The value itself is not kept, raw or escaped ("caf" alone may be in a digest).
    text = path.read_text(encoding="utf-8")
    assert "caf\u00e9" not in text
    assert "caf\\u00e9" not in text


def test_replay_shows_each_execution_with_its_parameters(tmp_path: Path) -> None:
    st = store(tmp_path)
    rec = st.open(context())
    rec.bind("s1", None, ["it's", None, {"binary": "AAAAKg=="}, "\x1b[31mred", "x" * 500])
    rec.end(reason="client_terminated")
    out = io.StringIO()
    render_replay(Console(file=out, width=2000, color_system=None), replay(st.path_for("sess-1")))
    shown = out.getvalue()
    assert "execute s1 $1='it''s', $2=NULL, $3=\\x0000002a, $4='\\u001b[31mred'" in shown
    assert "\x1b" not in shown  # control characters made visible
    assert "$5='" + "x" * 199 + "..." in shown
    assert "x" * 200 not in shown


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ({"statement_name": "s1", "portal": None}, "'params' must be a list"),
        ({"params": "x"}, "'params' must be a list"),
        ({"params": [1]}, "a parameter must be"),
        ({"params": [{"binary": "!!!"}]}, "cannot be decoded"),
        ({"params": [{"omitted": "why"}]}, "'bytes'"),
        ({"params": [{"other": 1}]}, "a parameter must be"),
        ({"params": [], "statement_name": 5}, "'statement_name'"),
    ],
)
def test_a_malformed_bind_record_is_reported_not_trusted(
    members: dict[str, object], problem: str
) -> None:
    record = {"seq": 3, "kind": "bind", "t": 0.5, "wall": "2026-01-01T00:00:00+00:00", **members}
    with pytest.raises(RecordingFormatError, match=re.escape(problem)):
        parse_record(record)
