from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sluice.audit import AuditError, AuditLog, AuditSpec, SessionStart, StatementAllowed
from sluice.audit.sinks.webhook import WebhookSink
from sluice.notify.http import Backoff

from .audit_receivers import HttpBehaviour, HttpReceiver, free_port, wait_for

FAST = Backoff(initial=0.01, maximum=0.05)


def _sink(url: str, spool: Path, **kwargs: Any) -> WebhookSink:
    return WebhookSink(url=url, spool_dir=spool, backoff=FAST, timeout=2.0, **kwargs)


def _spooled(spool: Path) -> list[Path]:
    return sorted(spool.glob("*.json"))


def test_retries_until_the_receiver_accepts(tmp_path: Path) -> None:
    receiver = HttpReceiver(HttpBehaviour(fail_first=3))
    try:
        sink = _sink(receiver.url, tmp_path / "spool")
        audit = AuditLog([sink])
        events = [StatementAllowed(statement=f"SELECT {i}") for i in range(5)]
        for e in events:
            audit.emit(e)
        wait_for(lambda: len(receiver.behaviour.received) == 5)
        audit.close()
        assert [b["id"] for b in receiver.behaviour.received] == [e.id for e in events]
        assert receiver.behaviour.requests == 8  # 3 failures, then one POST per event
        assert _spooled(tmp_path / "spool") == []
        assert sink.delivered == 5
        assert receiver.behaviour.headers[0]["Content-Type"] == "application/json"
    finally:
        receiver.close()


def test_events_are_spooled_before_emit_returns(tmp_path: Path) -> None:
    sink = _sink(f"http://127.0.0.1:{free_port()}/hook", tmp_path / "spool")
    try:
        event = SessionStart(session_id="s1")
        sink.emit(event, f'{{"id":"{event.id}"}}')
        files = _spooled(tmp_path / "spool")
        assert len(files) == 1
        assert event.id in files[0].read_text()
        assert files[0].stat().st_mode & 0o777 == 0o600
    finally:
        sink.close(time.monotonic())


def test_receiver_down_then_up_across_restart(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    spec = AuditSpec.model_validate(
        {
            "sinks": [
                {
                    "type": "webhook",
                    "url": url,
                    "spool_dir": str(spool),
                    "backoff_initial_seconds": 0.01,
                    "backoff_max_seconds": 0.05,
                }
            ]
        }
    )
    first = AuditLog.from_spec(spec)
    before = [StatementAllowed(statement=f"SELECT {i}") for i in range(5)]
    for e in before:
        first.emit(e)
    first.close(timeout=0.3)  # receiver still down: everything stays spooled
    assert len(_spooled(spool)) == 5

    receiver = HttpReceiver(port=port)
    try:
        second = AuditLog.from_spec(spec)  # a restart drains the spool first
        after = [StatementAllowed(statement=f"SELECT {i}") for i in range(5, 8)]
        for e in after:
            second.emit(e)
        wait_for(lambda: len(receiver.behaviour.received) == 8)
        second.close()
        ids = [b["id"] for b in receiver.behaviour.received]
        assert ids == [e.id for e in before + after]  # nothing lost, in order, no duplicates
        assert _spooled(spool) == []
    finally:
        receiver.close()


def test_rejected_events_are_dead_lettered(tmp_path: Path) -> None:
    def status(body: dict[str, Any]) -> int:
        return 400 if body.get("statement") == "bad" else 200

    receiver = HttpReceiver(HttpBehaviour(status_for=status))
    try:
        sink = _sink(receiver.url, tmp_path / "spool")
        audit = AuditLog([sink])
        for text in ("ok1", "bad", "ok2"):
            audit.emit(StatementAllowed(statement=text))
        wait_for(lambda: len(receiver.behaviour.received) == 2)
        audit.close()
        assert [b["statement"] for b in receiver.behaviour.received] == ["ok1", "ok2"]
        dead = list((tmp_path / "spool" / "dead").glob("*.json"))
        assert len(dead) == 1
        assert '"bad"' in dead[0].read_text()
        assert sink.dead_lettered == 1
    finally:
        receiver.close()


def test_one_process_per_spool(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    first = _sink(url, tmp_path / "spool")
    try:
        with pytest.raises(AuditError, match="in use"):
            _sink(url, tmp_path / "spool")
    finally:
        first.close(time.monotonic())
    _sink(url, tmp_path / "spool").close(time.monotonic())  # free again after close


def test_half_written_spool_files_are_discarded(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / ".0001-000000001.json.tmp").write_text('{"id": "partial')
    receiver = HttpReceiver()
    try:
        sink = _sink(receiver.url, spool)
        time.sleep(0.2)
        sink.close(time.monotonic() + 1)
        assert receiver.behaviour.received == []
        assert list(spool.iterdir()) == [spool / ".lock"]
    finally:
        receiver.close()


def test_spool_limit(tmp_path: Path) -> None:
    sink = _sink(f"http://127.0.0.1:{free_port()}/hook", tmp_path / "spool", max_spool_events=2)
    try:
        for _ in range(4):
            e = SessionStart()
            sink.emit(e, "{}")
        assert sink.dropped == 2
        assert len(_spooled(tmp_path / "spool")) == 2
    finally:
        sink.close(time.monotonic())


def test_bearer_token_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TEST_AUDIT_TOKEN", "s3cret")
    receiver = HttpReceiver()
    try:
        spec = AuditSpec.model_validate(
            {
                "sinks": [
                    {
                        "type": "webhook",
                        "url": receiver.url,
                        "spool_dir": str(tmp_path / "spool"),
                        "headers": {"X-Source": "sluice"},
                        "bearer_token_env": "SLUICE_TEST_AUDIT_TOKEN",
                    }
                ]
            }
        )
        audit = AuditLog.from_spec(spec)
        audit.emit(SessionStart())
        wait_for(lambda: len(receiver.behaviour.received) == 1)
        audit.close()
        headers = receiver.behaviour.headers[0]
        assert headers["Authorization"] == "Bearer s3cret"
        assert headers["X-Source"] == "sluice"
    finally:
        receiver.close()


def test_only_http_urls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http"):
        _sink("file:///etc/passwd", tmp_path / "spool")
