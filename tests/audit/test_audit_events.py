from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import uuid
from pathlib import Path

import pytest

from sluice.audit import (
    EVENT_TYPES,
    ApprovalRequested,
    AuditEvent,
    EventLines,
    MaskingApplied,
    MaskingCount,
    Outcome,
    SessionStart,
    StatementBlocked,
    TokenCreated,
    context_fields,
    to_dict,
    to_json,
)
from sluice.events import Identity, Protocol, SessionContext

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-schema.md"
COMMON = [
    "type",
    "schema",
    "id",
    "timestamp",
    "identity",
    "connection",
    "session_id",
    "outcome",
    "rule",
    "reason",
    "client_addr",
]

CTX = SessionContext(
    session_id="sess-9",
    identity=Identity(user="alice", groups=("dba",), token_id="tok-1"),
    connection="prod-db",
    protocol=Protocol.POSTGRES,
    client_addr="10.1.2.3:4444",
)


def test_all_types_listed() -> None:
    assert sorted(EVENT_TYPES) == sorted(
        [
            "auth.failed",
            "session.start",
            "session.end",
            "statement.allowed",
            "statement.blocked",
            "approval.requested",
            "approval.approved",
            "approval.denied",
            "approval.expired",
            "approval.withdrawn",
            "token.created",
            "token.revoked",
            "policy.reloaded",
            "masking.applied",
            "recording.failed",
        ]
    )


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_every_event_has_the_common_fields(name: str) -> None:
    event = EVENT_TYPES[name](**context_fields(CTX))
    data = json.loads(to_json(event))
    assert list(data)[: len(COMMON)] == COMMON
    assert data["type"] == name == event.type
    assert uuid.UUID(data["id"]).version == 8  # RFC 9562 v8: per-process random bits + counter
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", data["timestamp"])
    assert data["identity"] == {"user": "alice", "groups": ["dba"], "token_id": "tok-1"}
    assert data["session_id"] == "sess-9"
    assert data["client_addr"] == "10.1.2.3:4444"
    assert data["outcome"] in {o.value for o in Outcome}


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_the_json_line_holds_what_to_dict_gives(name: str) -> None:
    event = EVENT_TYPES[name](**context_fields(CTX))
    assert json.loads(to_json(event)) == to_dict(event)
    assert json.loads(to_json(event)) == to_dict(event)  # again, from the caches


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_event_lines_give_the_line_to_json_gives(name: str) -> None:
    cls = EVENT_TYPES[name]
    lines = EventLines(cls, **context_fields(CTX))
    cest = dt.timezone(dt.timedelta(hours=2))
    for stamp in (
        dt.datetime(2030, 6, 1, 12, 0, 0, 123456, tzinfo=dt.UTC),
        dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC),  # no fraction
        dt.datetime(2030, 6, 1, 12, 0, 0, 7, tzinfo=cest),
    ):
        values = {"id": "e-1", "timestamp": stamp, "reason": 'why "so"\n', "rule": None}
        assert lines.line(dict(values)) == (to_json(lines.event(dict(values))) + "\n").encode()
    fresh = json.loads(lines.line({}))
    assert uuid.UUID(fresh["id"]).version == 8
    assert fresh == {
        **to_dict(cls(**context_fields(CTX))),
        "id": fresh["id"],
        "timestamp": fresh["timestamp"],
    }


def test_event_lines_refuse_unknown_fields() -> None:
    with pytest.raises(TypeError, match="no field nonsense"):
        EventLines(SessionStart, nonsense=1)


def test_the_json_line_of_an_event_with_nested_values() -> None:
    counts = (MaskingCount(column="email", detector="email", count=3),)
    event = MaskingApplied(**context_fields(CTX), profiles=("pii",), counts=counts)
    assert json.loads(to_json(event)) == to_dict(event)
    anonymous = SessionStart(reason="no identity")
    assert json.loads(to_json(anonymous))["identity"] is None


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_schema_doc_describes_every_field(name: str) -> None:
    doc = DOC.read_text()
    section = doc.split(f"### `{name}`", 1)
    assert len(section) == 2, f"{name} missing from {DOC.name}"
    body = section[1].split("\n### ", 1)[0]
    own = {f.name for f in dataclasses.fields(EVENT_TYPES[name])} - {
        f.name for f in dataclasses.fields(AuditEvent)
    }
    for field_name in own:
        assert f"`{field_name}`" in body, f"{name}.{field_name} not documented"
    assert f"`{EVENT_TYPES[name]().outcome}`" in body


def test_default_outcomes() -> None:
    assert StatementBlocked().outcome == Outcome.DENIED
    assert ApprovalRequested().outcome == Outcome.PENDING
    assert SessionStart().outcome == Outcome.SUCCESS


def test_events_are_frozen_and_keyword_only() -> None:
    event = SessionStart(protocol="postgres")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.protocol = "mysql"  # type: ignore[misc]
    with pytest.raises(TypeError):
        SessionStart("x")  # type: ignore[call-arg]
    assert not hasattr(event, "__dict__")


def test_type_specific_fields() -> None:
    expires = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    data = to_dict(
        ApprovalRequested(
            **context_fields(CTX),
            rule="prod-writes",
            reason="writes need approval",
            approval_id="ap-1",
            statement="DELETE FROM t",
            approver_groups=("dba", "sre"),
            expires_at=expires,
        )
    )
    assert data["approver_groups"] == ["dba", "sre"]
    assert data["expires_at"] == "2030-01-02T03:04:05.000000Z"
    masked = to_dict(
        MaskingApplied(
            **context_fields(CTX),
            profiles=("pii",),
            counts=(MaskingCount(column="email", detector="email", count=3),),
        )
    )
    assert masked["counts"] == [{"column": "email", "detector": "email", "count": 3}]


def test_token_events_carry_no_secret() -> None:
    data = to_dict(TokenCreated(token_id="tok-2", subject="agent-7"))
    assert set(data) >= {"token_id", "subject", "subject_groups", "expires_at"}
    assert not {"token", "secret", "value", "password"} & set(data)


def test_timestamps_are_utc() -> None:
    cest = dt.timezone(dt.timedelta(hours=2))
    event = SessionStart(timestamp=dt.datetime(2030, 6, 1, 12, 0, tzinfo=cest))
    assert to_dict(event)["timestamp"] == "2030-06-01T10:00:00.000000Z"
    assert json.loads(to_json(event))["timestamp"] == "2030-06-01T10:00:00.000000Z"
    later = SessionStart(timestamp=dt.datetime(2030, 6, 1, 12, 0, 0, 5, tzinfo=cest))
    assert json.loads(to_json(later))["timestamp"] == "2030-06-01T10:00:00.000005Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        to_json(SessionStart(timestamp=dt.datetime(2030, 6, 1)))


def test_event_ids_are_unique_across_forked_workers() -> None:
    import os

    from sluice.audit.stamps import new_id as _new_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, "\n".join(_new_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = set(os.read(read, 1 << 20).decode().split("\n"))
    mine = {_new_id() for _ in range(100)}
    assert len(child) == 100
    assert not child & mine
