from __future__ import annotations

import datetime as dt
import io
import os
import time
from pathlib import Path

import pytest
from rich.console import Console

from sluice.policy.verdict import Allow
from sluice.recording import RecordingFormatError, prune, render_replay, replay
from sluice.recording.render import MAX_RENDER_ROWS

from .recording_helpers import context, lines, make_log, store


def _render(path: Path, **kwargs: object) -> str:
    console = Console(file=io.StringIO(), width=120, record=True, color_system=None)
    render_replay(console, replay(path), **kwargs)  # type: ignore[arg-type]
    return console.export_text()


def test_render_shows_the_session_in_order(tmp_path: Path) -> None:
    out = _render(make_log(tmp_path))
    expected_order = [
        "Session sess-1: alice (dba, oncall) -> prod-db [postgres] from 10.0.0.7:51234",
        "simple> SELECT id, email FROM users",
        "ALLOW rule=read-only mask=email",
        "id (int4)",
        "a***@example.com",
        "NULL",
        "SELECT 2",
        "simple> DROP TABLE users",
        "BLOCK rule=no-ddl: DDL is not allowed",
        "ERROR 42501 (gateway): blocked by rule no-ddl",
        "parse s1> UPDATE users SET x = 1",
        "approval requested ap-1",
        "approval approved ap-1 by bob",
        "WARNING: table rewritten",
        "UPDATE 1",
        "session end: client closed; 3 statements, 2 rows recorded",
        "sealed after 15 records",
    ]
    positions = [out.index(s) for s in expected_order]
    assert positions == sorted(positions)
    assert "[+    0.500s]" in out  # offsets from the fake monotonic clock


def test_render_never_interprets_recorded_text(tmp_path: Path) -> None:
    rec = store(tmp_path).open(context())
    rec.statement("SELECT '[bold red]x[/]' -- \x1b[2J\x1b]0;pwned\x07", origin="simple")
    rec.verdict(Allow(rule="r"))
    rec.rows(["[link=http://evil]c[/link]"], [["\x1b[31mred\u202e"]])
    rec.end(reason="done")
    console = Console(file=io.StringIO(), width=200, record=True, force_terminal=True)
    render_replay(console, replay(rec.path))
    text = console.export_text()
    assert "[bold red]x[/]" in text
    assert "[link=http://evil]c[/link]" in text
    assert "\\u001b[2J" in text
    assert "\\u202e" in text
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[2J" not in raw
    assert "\x1b]0;pwned" not in raw
    assert "\u202e" not in raw


def test_render_caps_rows_per_table(tmp_path: Path) -> None:
    rec = store(tmp_path).open(context())
    rec.statement("SELECT n", origin="simple")
    rec.rows(["n"], [[f"row{i}"] for i in range(MAX_RENDER_ROWS + 25)])
    rec.complete(f"SELECT {MAX_RENDER_ROWS + 25}")
    rec.end(reason="done")
    out = _render(rec.path)
    assert f"row{MAX_RENDER_ROWS - 1}" in out
    assert f"row{MAX_RENDER_ROWS} " not in out
    assert "... 25 more rows not shown" in out


def test_realtime_waits_between_records(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    pauses: list[float] = []
    _render(path, realtime=True, speed=2.0, sleep=pauses.append)
    assert len(pauses) == 15
    assert all(p == pytest.approx(0.125) for p in pauses)


def test_replay_skips_a_partial_last_line(tmp_path: Path) -> None:
    path = make_log(tmp_path)
    raw = lines(path)
    path.write_bytes(b"".join(raw[:5]) + raw[5][:10])
    assert [r.seq for r in replay(path)] == [0, 1, 2, 3, 4]
    path.write_bytes(b"".join(raw[:3]) + b"not json\n")
    with pytest.raises(RecordingFormatError, match=":4: not JSON"):
        list(replay(path))
    with pytest.raises(RecordingFormatError, match="cannot open"):
        list(replay(tmp_path / "missing.slog"))


def test_prune(tmp_path: Path) -> None:
    st = store(tmp_path, retention_days=30)
    for sid in ("old", "new"):
        st.open(context(sid)).end(reason="done")
    old = st.path_for("old")
    now = time.time()
    os.utime(old, (now - 40 * 86400, now - 40 * 86400))
    keep = st.dir / "keep.txt"
    keep.write_text("not a log")
    os.utime(keep, (now - 400 * 86400, now - 400 * 86400))
    link = st.dir / "link.slog"
    link.symlink_to(old)
    assert st.prune(now=now) == [old]
    assert sorted(p.name for p in st.dir.iterdir()) == ["keep.txt", "link.slog", "new.slog"]
    assert prune(st.dir, dt.timedelta(days=1), now=now + 2 * 86400) == [st.path_for("new")]
    assert prune(tmp_path / "nowhere", dt.timedelta(days=1)) == []
    assert store(tmp_path, retention_days=None).prune() == []
