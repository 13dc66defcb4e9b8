"""Just-in-time approval requests, kept in the store.

A request binds to the exact statement text (its SHA-256 digest), the
requester and the connection. Approvers decide from any process (`sluice
approvals approve`); the gateway holding the statement polls the store.

Semantics:
- An approval is used once: the held statement runs, or, when the client
  went away (e.g. `sluice exec` without `--wait`), the next identical
  statement from the same requester on the same connection runs.
- An approval may grant a window: identical statements from that requester
  on that connection pass without a new request until it closes.
- A client's cancel (Ctrl-C) withdraws the request; a client that merely
  disconnects leaves it pending until it expires.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select

from sluice.errors import SluiceError
from sluice.events import Identity
from sluice.store.db import Store, aware, utcnow
from sluice.store.models import ApprovalRow


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    CONSUMED = "consumed"


class ApprovalError(SluiceError):
    sqlstate = "42501"


def statement_digest(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    id: str
    session_id: str | None
    requester: str
    requester_groups: tuple[str, ...]
    connection: str
    statement: str
    digest: str
    rule: str
    reason: str
    approver_groups: tuple[str, ...]
    status: ApprovalStatus
    created_at: dt.datetime
    expires_at: dt.datetime
    decided_at: dt.datetime | None
    decided_by: str | None
    decision_reason: str | None
    window_until: dt.datetime | None

    @classmethod
    def of(cls, row: ApprovalRow) -> Approval:
        return cls(
            id=row.id,
            session_id=row.session_id,
            requester=row.requester,
            requester_groups=tuple(row.requester_groups),
            connection=row.connection,
            statement=row.statement,
            digest=row.digest,
            rule=row.rule,
            reason=row.reason,
            approver_groups=tuple(row.approver_groups),
            status=ApprovalStatus(row.status),
            created_at=aware(row.created_at) or utcnow(),
            expires_at=aware(row.expires_at) or utcnow(),
            decided_at=aware(row.decided_at),
            decided_by=row.decided_by,
            decision_reason=row.decision_reason,
            window_until=aware(row.window_until),
        )

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "status": self.status.value,
            "requester": self.requester,
            "requester_groups": list(self.requester_groups),
            "connection": self.connection,
            "statement": self.statement,
            "digest": self.digest,
            "rule": self.rule,
            "reason": self.reason,
            "approver_groups": list(self.approver_groups),
            "session_id": self.session_id,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "decided_by": self.decided_by,
            "decision_reason": self.decision_reason,
            "window_until": self.window_until.isoformat() if self.window_until else None,
        }


class ApprovalService:
    def __init__(self, store: Store):
        self.store = store

    def request(
        self,
        *,
        requester: Identity,
        connection: str,
        statement: str,
        rule: str,
        reason: str,
        approver_groups: tuple[str, ...],
        timeout: dt.timedelta,
        session_id: str | None,
    ) -> tuple[Approval, bool]:
        """Open a request, or re-attach to a pending one for the same statement.

        Returns the request and whether it is new.
        """
        digest = statement_digest(statement)
        now = utcnow()
        with self.store.transaction() as s:
            existing = s.scalars(
                select(ApprovalRow)
                .where(
                    ApprovalRow.digest == digest,
                    ApprovalRow.requester == requester.user,
                    ApprovalRow.connection == connection,
                    ApprovalRow.status == ApprovalStatus.PENDING.value,
                    ApprovalRow.expires_at > now,
                )
                .order_by(ApprovalRow.created_at.desc())
            ).first()
            if existing is not None:
                existing.session_id = session_id
                return Approval.of(existing), False
            row = ApprovalRow(
                id=secrets.token_hex(4),
                session_id=session_id,
                requester=requester.user,
                requester_groups=list(requester.groups),
                connection=connection,
                statement=statement,
                digest=digest,
                rule=rule,
                reason=reason,
                approver_groups=list(approver_groups),
                status=ApprovalStatus.PENDING.value,
                created_at=now,
                expires_at=now + timeout,
            )
            s.add(row)
            return Approval.of(row), True

    def usable_grant(self, *, requester: str, connection: str, statement: str) -> Approval | None:
        """An approval that lets this statement run now without a new request.

        An approved, not yet used request is consumed; an open window is not.
        """
        digest = statement_digest(statement)
        now = utcnow()
        with self.store.transaction() as s:
            rows = s.scalars(
                select(ApprovalRow)
                .where(
                    ApprovalRow.digest == digest,
                    ApprovalRow.requester == requester,
                    ApprovalRow.connection == connection,
                    ApprovalRow.status.in_(
                        [ApprovalStatus.APPROVED.value, ApprovalStatus.CONSUMED.value]
                    ),
                )
                .order_by(ApprovalRow.decided_at.desc())
            ).all()
            for row in rows:
                window = aware(row.window_until)
                if window is not None and window > now:
                    return Approval.of(row)
                if row.status == ApprovalStatus.APPROVED.value:
                    row.status = ApprovalStatus.CONSUMED.value
                    return Approval.of(row)
        return None

    def get(self, approval_id: str) -> Approval | None:
        with self.store.transaction() as s:
            row = s.get(ApprovalRow, approval_id)
            return Approval.of(row) if row else None

    def list_requests(
        self, *, status: ApprovalStatus | None = None, limit: int = 100
    ) -> list[Approval]:
        self.expire_due()
        query = select(ApprovalRow).order_by(ApprovalRow.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(ApprovalRow.status == status.value)
        with self.store.transaction() as s:
            return [Approval.of(r) for r in s.scalars(query).all()]

    def decide(
        self,
        approval_id: str,
        *,
        approver: Identity,
        approve: bool,
        reason: str | None,
        window: dt.timedelta | None = None,
    ) -> Approval:
        now = utcnow()
        with self.store.transaction() as s:
            row = s.get(ApprovalRow, approval_id)
            if row is None:
                raise ApprovalError(
                    f"no approval request {approval_id!r}", hint="see `sluice approvals list`"
                )
            if row.status != ApprovalStatus.PENDING.value:
                raise ApprovalError(f"request {approval_id} is already {row.status}")
            if (aware(row.expires_at) or now) <= now:
                row.status = ApprovalStatus.EXPIRED.value
                raise ApprovalError(
                    f"request {approval_id} expired at {row.expires_at:%Y-%m-%d %H:%M:%S} UTC"
                )
            if approver.user == row.requester:
                raise ApprovalError(
                    "you cannot decide your own request",
                    hint="ask another member of an approver group",
                )
            if not set(approver.groups) & set(row.approver_groups):
                raise ApprovalError(
                    f"{approver.user} is not in an approver group of this request "
                    f"({', '.join(row.approver_groups)})",
                )
            if not approve and not reason:
                raise ApprovalError("a denial needs a reason", hint="pass --reason")
            row.status = (ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED).value
            row.decided_at = now
            row.decided_by = approver.user
            row.decision_reason = reason
            if approve and window is not None:
                row.window_until = now + window
            return Approval.of(row)

    def finish(self, approval_id: str, status: ApprovalStatus) -> Approval | None:
        """Mark a pending or approved request as expired, withdrawn or consumed."""
        with self.store.transaction() as s:
            row = s.get(ApprovalRow, approval_id)
            if row is None:
                return None
            if row.status in (ApprovalStatus.PENDING.value, ApprovalStatus.APPROVED.value):
                row.status = status.value
            return Approval.of(row)

    def expire_due(self) -> list[Approval]:
        now = utcnow()
        with self.store.transaction() as s:
            rows = s.scalars(
                select(ApprovalRow).where(
                    ApprovalRow.status == ApprovalStatus.PENDING.value,
                    ApprovalRow.expires_at <= now,
                )
            ).all()
            for row in rows:
                row.status = ApprovalStatus.EXPIRED.value
            return [Approval.of(r) for r in rows]
