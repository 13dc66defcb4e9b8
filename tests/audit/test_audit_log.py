from __future__ import annotations

import asyncio
import io
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.audit import (
    AuditError,
    AuditLog,
    AuditSpec,
    EventLines,
    FileSinkSpec,
    SessionStart,
    StatementAllowed,
    SyslogSinkSpec,
    WebhookSinkSpec,
)
from sluice.audit.events import to_dict
from sluice.audit.sinks import FileSink, StdoutSink
from sluice.events import Identity

from .audit_receivers import wait_for


def _fsync_of(name: str, fsync: Any) -> Any:
    """os.fsync, calling `fsync` instead for descriptors of files called `name`.

    Patched on `os` itself: the sink may be compiled (mypyc), and a compiled
    module's imports cannot be replaced from outside.
    """
    real = os.fsync

    def patched(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/" + name):
            fsync(fd)
        else:
            real(fd)

    return patched


DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-schema.md"


def test_default_is_a_file_sink(tmp_path: Path) -> None:
    audit = AuditLog.from_spec(AuditSpec(), base_dir=tmp_path)
    event = SessionStart(session_id="s1")
    audit.emit(event)
    # "emit returned" means the line is in the file
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [event.id]
    audit.close()
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_fsync_policies(tmp_path: Path, fsync: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", _fsync_of("a.jsonl", counting_fsync))
    sink = FileSink(tmp_path / "a.jsonl", fsync=fsync, fsync_interval=0.05)  # type: ignore[arg-type]
    audit = AuditLog([sink])
    audit.emit(SessionStart())
    if fsync == "always":
        assert len(calls) == 1
    elif fsync == "interval":
        wait_for(lambda: len(calls) >= 1)
    audit.close()
    if fsync == "never":
        assert calls == []


def test_a_slow_fsync_does_not_hold_up_emit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interval fsync runs in its thread while the event loop keeps writing."""
    in_fsync, release = threading.Event(), threading.Event()
    real = os.fsync

    def slow_fsync(fd: int) -> None:
        in_fsync.set()
        release.wait(10)
        real(fd)

    monkeypatch.setattr(os, "fsync", _fsync_of("a.jsonl", slow_fsync))
    sink = FileSink(tmp_path / "a.jsonl", fsync="interval", fsync_interval=0.01)
    audit = AuditLog([sink])
    try:
        audit.emit(SessionStart())
        assert in_fsync.wait(5)
        started = time.monotonic()
        audit.emit(SessionStart())  # while the fsync is still running
        assert time.monotonic() - started < 1.0
        assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 2
    finally:
        release.set()
        audit.close()


def test_required_file_sink_fails_closed(tmp_path: Path) -> None:
    target = tmp_path / "dir-not-file"
    target.mkdir()
    with pytest.raises(AuditError):
        AuditLog.from_spec(AuditSpec(sinks=[FileSinkSpec(path=target, required=True)]))
    sink = FileSink(tmp_path / "ok.jsonl", required=True)
    audit = AuditLog([sink])
    audit.emit(SessionStart())
    os.close(sink._fd)  # type: ignore[arg-type]  # simulate the disk going away
    with pytest.raises(AuditError) as info:
        audit.emit(SessionStart())
    assert info.value.sqlstate == "58030"
    audit.close()
    with pytest.raises(AuditError, match="after close"):
        audit.emit(SessionStart())


def test_event_lines_fail_closed_on_a_required_file_sink(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "ok.jsonl", required=True)
    audit = AuditLog([sink])
    lines = EventLines(StatementAllowed, session_id="s1")
    audit.emit_lines(lines, {"statement": "SELECT 1"})
    os.close(sink._fd)  # type: ignore[arg-type]  # simulate the disk going away
    with pytest.raises(AuditError, match=r"statement\.allowed"):
        audit.emit_lines(lines, {"statement": "SELECT 2"})
    audit.close()
    with pytest.raises(AuditError, match="after close"):
        audit.emit_lines(lines, {"statement": "SELECT 3"})


def test_event_lines_reach_every_sink_as_the_event_would(tmp_path: Path) -> None:
    """File and stdout sinks take the line; a sink that needs the object gets one."""

    class ObjectSink:
        name = "objects"

        def __init__(self) -> None:
            self.events: list[tuple[object, str]] = []

        def emit(self, event: object, line: str) -> None:
            self.events.append((event, line))

        def close(self, deadline: float) -> None:
            return None

    identity = Identity(user="agent", groups=("agents",))
    lines = EventLines(StatementAllowed, identity=identity, session_id="s1")
    values: dict[str, Any] = {"rule": "r", "statement": "SELECT 1", "origin": "simple"}
    stream = io.StringIO()
    line_only = AuditLog([FileSink(tmp_path / "a.jsonl"), StdoutSink(queue_size=4, stream=stream)])
    line_only.emit_lines(lines, values)
    line_only.close()
    written = json.loads((tmp_path / "a.jsonl").read_text())
    assert written == json.loads(stream.getvalue())
    expected = to_dict(StatementAllowed(identity=identity, session_id="s1", **values))
    assert {k: v for k, v in written.items() if k not in ("id", "timestamp")} == {
        k: v for k, v in expected.items() if k not in ("id", "timestamp")
    }
    objects = ObjectSink()
    mixed = AuditLog([FileSink(tmp_path / "b.jsonl"), objects])
    mixed.emit_lines(lines, values)
    mixed.close()
    [(event, line)] = objects.events
    assert isinstance(event, StatementAllowed)
    assert event.statement == "SELECT 1"
    assert event.identity is identity
    assert json.loads((tmp_path / "b.jsonl").read_text()) == json.loads(line)


def test_an_event_that_cannot_be_serialised_fails_closed_only_when_required(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = EventLines(StatementAllowed, session_id="s1")
    strange = StatementAllowed(statement=object())  # type: ignore[arg-type]
    required = AuditLog([FileSink(tmp_path / "r.jsonl", required=True)])
    with pytest.raises(AuditError, match="cannot be serialised"):
        required.emit(strange)
    with pytest.raises(AuditError, match="cannot be serialised"):
        required.emit_lines(lines, {"statement": object()})
    required.close()
    optional = AuditLog([FileSink(tmp_path / "o.jsonl")])
    optional.emit(strange)
    optional.emit_lines(lines, {"statement": object()})
    optional.close()
    assert (tmp_path / "o.jsonl").read_text() == ""
    assert caplog.text.count("cannot be serialised") == 2


def test_optional_file_sink_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "dir-not-file"
    target.mkdir()
    audit = AuditLog.from_spec(AuditSpec(sinks=[FileSinkSpec(path=target)]))
    audit.emit(SessionStart())
    audit.close()
    audit.emit(SessionStart())  # after close: logged, not raised
    assert "lost" in caplog.text


def test_network_sinks_never_raise_and_do_not_block(tmp_path: Path) -> None:
    spec = AuditSpec(
        sinks=[
            SyslogSinkSpec(host="127.0.0.1", port=9, transport="tcp", queue_size=10),
            WebhookSinkSpec.model_validate(
                {"url": "http://127.0.0.1:9/x", "spool_dir": str(tmp_path / "s")}
            ),
        ]
    )
    audit = AuditLog.from_spec(spec)
    start = time.monotonic()
    for i in range(200):
        audit.emit(StatementAllowed(statement=f"SELECT {i}"))
    assert time.monotonic() - start < 2.0
    audit.close(timeout=0.2)
    assert len(list((tmp_path / "s").glob("*.json"))) == 200


def test_stdout_sink() -> None:
    stream = io.StringIO()
    audit = AuditLog([StdoutSink(queue_size=100, stream=stream)])
    events = [SessionStart(), StatementAllowed(statement="SELECT 1")]
    for e in events:
        audit.emit(e)
    audit.close()
    assert [json.loads(x)["id"] for x in stream.getvalue().splitlines()] == [e.id for e in events]


def test_aclose_does_not_block_the_loop(tmp_path: Path) -> None:
    async def main() -> None:
        audit = AuditLog.from_spec(AuditSpec(), base_dir=tmp_path)
        audit.emit(SessionStart())
        await audit.aclose()

    asyncio.run(main())
    assert (tmp_path / "audit.jsonl").read_text().count("\n") == 1


def test_documented_yaml_example_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"```yaml\n(audit:.*?)```", DOC.read_text(), re.S)
    assert block is not None
    spec = AuditSpec.model_validate(yaml.safe_load(block.group(1))["audit"])
    assert [s.type for s in spec.sinks] == ["file", "syslog", "webhook", "stdout"]


def test_unknown_sink_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="kafka"):
        AuditSpec.model_validate({"sinks": [{"type": "kafka"}]})
