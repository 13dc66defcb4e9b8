"""Audit events: what happened, to whom, and why, for SIEMs.

Every event has the common fields of `AuditEvent`; each type adds its own.
Events never carry secrets (token values, passwords, keys) or result values.
Statement text is included as the client sent it (callers must pass it
unchanged; literals in it are the client's own input, not database data).
The schema is documented in docs/audit-schema.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import orjson

from sluice.audit.stamps import format_timestamp, new_id, settle_timestamp, utc_now
from sluice.events import Identity, SessionContext

SCHEMA_VERSION = 1


class Outcome(StrEnum):
    SUCCESS = "success"  # the action happened
    DENIED = "denied"  # policy or a person refused it
    PENDING = "pending"  # waiting for a decision
    FAILURE = "failure"  # it could not happen (error, timeout)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """Fields common to every audit event."""

    TYPE: ClassVar[str] = ""

    id: str = field(default_factory=new_id)
    timestamp: dt.datetime = field(default_factory=utc_now)
    identity: Identity | None = None
    connection: str | None = None
    session_id: str | None = None
    outcome: Outcome = Outcome.SUCCESS
    rule: str | None = None
    reason: str = ""
    client_addr: str | None = None

    @property
    def type(self) -> str:
        return self.TYPE


def context_fields(context: SessionContext) -> dict[str, Any]:
    """Common fields from a session context: `SessionStart(**context_fields(ctx), ...)`."""
    return {
        "identity": context.identity,
        "connection": context.connection,
        "session_id": context.session_id,
        "client_addr": context.client_addr,
    }


# -- sessions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStart(AuditEvent):
    TYPE: ClassVar[str] = "session.start"
    protocol: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnd(AuditEvent):
    TYPE: ClassVar[str] = "session.end"
    protocol: str = ""
    duration_ms: int = 0
    statements: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


# -- statements -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementAllowed(AuditEvent):
    TYPE: ClassVar[str] = "statement.allowed"
    statement: str = ""
    origin: str = ""
    mask_profiles: tuple[str, ...] = ()
    approval_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementBlocked(AuditEvent):
    TYPE: ClassVar[str] = "statement.blocked"
    outcome: Outcome = Outcome.DENIED
    statement: str = ""
    origin: str = ""


# -- approvals ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequested(AuditEvent):
    TYPE: ClassVar[str] = "approval.requested"
    outcome: Outcome = Outcome.PENDING
    approval_id: str = ""
    statement: str = ""
    approver_groups: tuple[str, ...] = ()
    expires_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalApproved(AuditEvent):
    TYPE: ClassVar[str] = "approval.approved"
    approval_id: str = ""
    approver: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalDenied(AuditEvent):
    TYPE: ClassVar[str] = "approval.denied"
    outcome: Outcome = Outcome.DENIED
    approval_id: str = ""
    approver: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalExpired(AuditEvent):
    TYPE: ClassVar[str] = "approval.expired"
    outcome: Outcome = Outcome.FAILURE
    approval_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalWithdrawn(AuditEvent):
    TYPE: ClassVar[str] = "approval.withdrawn"
    outcome: Outcome = Outcome.FAILURE
    approval_id: str = ""


# -- tokens ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenCreated(AuditEvent):
    """A token was issued. `identity` is who issued it; the token value is never included."""

    TYPE: ClassVar[str] = "token.created"
    token_id: str = ""
    subject: str = ""
    subject_groups: tuple[str, ...] = ()
    expires_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRevoked(AuditEvent):
    TYPE: ClassVar[str] = "token.revoked"
    token_id: str = ""
    subject: str = ""


# -- policy, masking, recording -------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyReloaded(AuditEvent):
    TYPE: ClassVar[str] = "policy.reloaded"
    source: str = ""
    digest: str = ""  # SHA-256 of the policy text
    rules: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskingCount:
    column: str
    detector: str
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskingApplied(AuditEvent):
    """Values were masked in one result: counts only, never values."""

    TYPE: ClassVar[str] = "masking.applied"
    profiles: tuple[str, ...] = ()
    counts: tuple[MaskingCount, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthFailed(AuditEvent):
    """A client could not authenticate (bad, expired or revoked token, wrong user,
    a connection it may not use). `identity` is set when the token was valid."""

    TYPE: ClassVar[str] = "auth.failed"
    outcome: Outcome = Outcome.DENIED
    protocol: str = ""
    claimed_user: str = ""
    sqlstate: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingFailed(AuditEvent):
    TYPE: ClassVar[str] = "recording.failed"
    outcome: Outcome = Outcome.FAILURE
    path: str = ""
    error: str = ""


EVENT_TYPES: dict[str, type[AuditEvent]] = {
    cls.TYPE: cls
    for cls in (
        SessionStart,
        SessionEnd,
        StatementAllowed,
        StatementBlocked,
        ApprovalRequested,
        ApprovalApproved,
        ApprovalDenied,
        ApprovalExpired,
        ApprovalWithdrawn,
        TokenCreated,
        TokenRevoked,
        PolicyReloaded,
        MaskingApplied,
        RecordingFailed,
        AuthFailed,
    )
}


# -- serialisation --------------------------------------------------------------


def _value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    if isinstance(value, Identity):
        return {"user": value.user, "groups": list(value.groups), "token_id": value.token_id}
    if isinstance(value, MaskingCount):
        return {"column": value.column, "detector": value.detector, "count": value.count}
    if isinstance(value, tuple | list):
        return [_value(v) for v in value]
    return value


def to_dict(event: AuditEvent) -> dict[str, Any]:
    """The event as JSON-ready members: `type` and `schema` first, then fields in order."""
    out: dict[str, Any] = {"type": event.TYPE, "schema": SCHEMA_VERSION}
    for f in dataclasses.fields(event):
        out[f.name] = _value(getattr(event, f.name))
    return out


_HEADS: dict[str, bytes] = {}  # per event type: the members every line starts with
_MEMBERS: dict[type, Callable[[Any], dict[str, Any]]] = {}  # per event class
# Identities as JSON, by object: sessions emit many events with the same one.
_IDENTITIES: dict[int, tuple[Identity, orjson.Fragment]] = {}
_IDENTITY_CACHE_SIZE = 4096


def identity_json(identity: Identity) -> orjson.Fragment:
    cached = _IDENTITIES.get(id(identity))
    if cached is not None and cached[0] is identity:
        return cached[1]
    fragment = orjson.Fragment(orjson.dumps(_value(identity)))
    if len(_IDENTITIES) >= _IDENTITY_CACHE_SIZE:
        _IDENTITIES.clear()
    _IDENTITIES[id(identity)] = (identity, fragment)
    return fragment


def _members_of(cls: type) -> Callable[[Any], dict[str, Any]]:
    """A function giving an event's fields as a dict, in order.

    Generated per class, as dataclasses generates `__init__`: a dict display
    of attribute loads is about four times faster than building the dict
    from the field names at run time, and this runs once per statement.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    if not all(name.isidentifier() for name in names):  # pragma: no cover - dataclass fields
        raise TypeError(f"{cls.__name__} has a field that is not an identifier")
    source = "lambda event: {" + ", ".join(f"{name!r}: event.{name}" for name in names) + "}"
    members: Callable[[Any], dict[str, Any]] = eval(source, {})  # noqa: S307 - names checked
    _MEMBERS[cls] = members
    return members


def line_head(event_type: str) -> bytes:
    head = _HEADS.get(event_type)
    if head is None:
        head = _HEADS[event_type] = (
            b'{"type":"' + event_type.encode() + b'","schema":' + str(SCHEMA_VERSION).encode()
        )
    return head


def _line(head: bytes, members: dict[str, Any]) -> str:
    """The JSON line of an event's members (identity already as JSON)."""
    settle_timestamp(members)
    body = orjson.dumps(members, option=orjson.OPT_UTC_Z, default=refuse_unserialisable)
    return (head + b"," + body[1:]).decode() if len(body) > 2 else (head + b"}").decode()


def to_json(event: AuditEvent) -> str:
    """One line of compact JSON (no newline); the same members as `to_dict`."""
    if event.timestamp.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    cls = type(event)
    members = (_MEMBERS.get(cls) or _members_of(cls))(event)
    identity = members.get("identity")
    if identity is not None:
        members["identity"] = identity_json(identity)
    return _line(line_head(event.TYPE), members)


def refuse_unserialisable(value: Any) -> Any:
    """orjson's `default`: what it cannot serialise is an error."""
    raise TypeError(f"cannot serialise {type(value).__name__}")
