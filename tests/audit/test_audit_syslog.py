from __future__ import annotations

import datetime as dt
import os
import socket

import pytest

from sluice.audit import (
    AuditLog,
    AuditSpec,
    RecordingFailed,
    SessionStart,
    StatementAllowed,
    StatementBlocked,
    to_dict,
    to_json,
)
from sluice.audit.sinks.syslog import SyslogSink, format_message, frame_octet_counting
from sluice.events import Identity

from .audit_receivers import TcpSyslogServer, UdpSyslogServer, free_port, parse_5424, wait_for

ALICE = Identity(user="alice", groups=("dba",))


def _events() -> list[StatementAllowed | StatementBlocked | RecordingFailed | SessionStart]:
    return [
        SessionStart(identity=ALICE, session_id="s1", connection="prod", protocol="postgres"),
        StatementAllowed(identity=ALICE, session_id="s1", statement="SELECT 1", origin="simple"),
        StatementBlocked(
            identity=ALICE,
            session_id="s1",
            rule='no-"ddl"]',
            reason="DDL",
            statement="DROP TABLE t",
            client_addr="10.0.0.1:5",
        ),
        RecordingFailed(session_id="s1", path="/r/s1.slog", error="No space left on device"),
    ]


def _check(raw: list[bytes], events: list[object]) -> None:
    assert len(raw) == len(events)
    for data, event in zip(raw, events, strict=True):
        assert isinstance(
            event, SessionStart | StatementAllowed | StatementBlocked | RecordingFailed
        )
        msg = parse_5424(data)
        assert msg.version == 1
        assert msg.facility == 13
        assert msg.severity == {"success": 6, "denied": 4, "failure": 3}[event.outcome]
        assert msg.hostname == "gw-1"
        assert msg.app == "sluice"
        assert msg.procid == str(os.getpid())
        assert msg.msgid == event.type
        assert dt.datetime.fromisoformat(msg.timestamp.replace("Z", "+00:00")) == event.timestamp
        assert msg.sd_id == "sluice@32473"
        assert msg.params["id"] == event.id
        assert msg.params["outcome"] == event.outcome
        assert msg.params["session_id"] == "s1"
        assert msg.json() == to_dict(event)
        if isinstance(event, StatementBlocked):
            assert msg.params["rule"] == 'no-"ddl"]'  # escaped in SD, parsed back
            assert msg.params["user"] == "alice"


def test_udp() -> None:
    server = UdpSyslogServer()
    try:
        spec = AuditSpec.model_validate(
            {
                "sinks": [
                    {"type": "syslog", "host": "127.0.0.1", "port": server.port, "hostname": "gw-1"}
                ]
            }
        )
        audit = AuditLog.from_spec(spec)
        events = _events()
        for e in events:
            audit.emit(e)
        wait_for(lambda: len(server.messages) == len(events))
        audit.close()
        _check(server.messages, list(events))
    finally:
        server.close()


def test_tcp_octet_counting_and_reconnect() -> None:
    server = TcpSyslogServer()
    port = server.port
    audit = AuditLog([SyslogSink(host="127.0.0.1", port=port, transport="tcp", hostname="gw-1")])
    events = _events()
    try:
        for e in events[:2]:
            audit.emit(e)
        wait_for(lambda: len(server.messages) == 2)
        server.close()  # receiver goes away ...
        for e in events[2:]:
            audit.emit(e)
        server = TcpSyslogServer(port=port)  # ... and comes back
        wait_for(lambda: len(server.messages) >= 2, timeout=15)
        audit.close()
        received = server.messages
        # a frame in flight when the connection broke may be sent again (at-least-once)
        ids = [parse_5424(m).params["id"] for m in received]
        assert ids[-2:] == [events[2].id, events[3].id]
        _check(received[-2:], list(events[2:]))
    finally:
        server.close()


def test_tcp_delivers_when_its_socket_is_past_descriptor_1024() -> None:
    """A busy gateway holds thousands of descriptors (two sockets and a log per
    session): the sink's check for a closed receiver must not use select()."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit on open files ({hard}) is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler: list[int] = []
    server = TcpSyslogServer()
    try:
        while not filler or filler[-1] < 1030:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        sink = SyslogSink(host="127.0.0.1", port=server.port, transport="tcp")
        audit = AuditLog([sink])
        for event in _events()[:2]:  # the second send checks the first's connection
            audit.emit(event)
        wait_for(lambda: len(server.messages) == 2)
        audit.close()
        assert sink.dropped == 0
    finally:
        for fd in filler:
            os.close(fd)
        server.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_tcp_receiver_down_at_close_does_not_hang() -> None:
    sink = SyslogSink(host="127.0.0.1", port=free_port(), transport="tcp", connect_timeout=0.2)
    audit = AuditLog([sink], close_timeout=0.5)
    audit.emit(SessionStart(identity=ALICE))
    audit.close()  # returns after ~0.5 s, having given up
    assert sink.dropped >= 1


def test_long_statement_is_cut_to_fit() -> None:
    event = StatementAllowed(identity=ALICE, statement="SELECT '" + "x" * 20000 + "'")
    message = format_message(
        event,
        to_json(event),
        facility=13,
        hostname="h",
        app_name="sluice",
        procid="1",
        max_bytes=2048,
    )
    assert message is not None
    assert len(message) <= 2048
    body = parse_5424(message).json()
    assert body["statement_truncated"] is True
    assert body["statement"].startswith("SELECT 'xx")
    assert body["id"] == event.id
    no_statement = format_message(
        SessionStart(reason="r" * 5000),
        '{"reason":"' + "r" * 5000 + '"}',
        facility=13,
        hostname="h",
        app_name="sluice",
        procid="1",
        max_bytes=1024,
    )
    assert no_statement is None


def test_header_fields_are_sanitised() -> None:
    message = format_message(
        SessionStart(),
        "{}",
        facility=1,
        hostname="bad host\n",
        app_name="",
        procid="1",
        max_bytes=4096,
    )
    assert message is not None
    parsed = parse_5424(message)
    assert parsed.hostname == "badhost"
    assert parsed.app == "-"


def test_octet_counting_frame() -> None:
    assert frame_octet_counting("héllo".encode()) == b"6 h\xc3\xa9llo"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_queue_full_drops_without_blocking(transport: str) -> None:
    # a receiver that never reads: the bounded queue fills, emit stays fast
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sink = SyslogSink(
            host="127.0.0.1",
            port=listener.getsockname()[1],
            transport="tcp" if transport == "tcp" else "udp",
            queue_size=5,
            max_message_bytes=600_000,
            connect_timeout=0.3,
        )
        big = StatementAllowed(statement="x" * 500_000)
        for _ in range(50):
            sink.emit(big, "{}")
        sink.close(0)
        if transport == "tcp":
            assert sink.dropped > 0
