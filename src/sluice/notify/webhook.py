"""Approval notifications to a Slack-compatible webhook.

`WebhookNotifier.notify` posts `{"text": ..., "blocks": [...]}` (Slack
incoming-webhook format; Mattermost and most chat bridges accept it), retries
with exponential backoff, and returns a `DeliveryResult` for the caller to
audit. When every attempt failed it also appends a record to `failure_log`
(if configured) with the message, so an operator can resend it. The HTTP
request runs in a thread; waiting between attempts is an asyncio sleep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from sluice.errors import SluiceError
from sluice.events import Identity
from sluice.notify.http import Backoff, HttpResult, post_json

log = logging.getLogger(__name__)

MAX_STATEMENT_CHARS: Final = 2800
"""Statement text shown in the message; Slack rejects section text over 3000 chars."""

MAX_FIELD_CHARS: Final = 1900
"""Slack section fields hold at most 2000 chars each."""


class NotifyError(SluiceError):
    """A notification could not be delivered after all retries."""

    sqlstate = "58030"


class NotifySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_initial_seconds: float = Field(default=0.5, gt=0)
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    approval_url: str | None = None
    """Link shown in messages, with `{approval_id}`, e.g. https://sluice/approvals/{approval_id}."""
    failure_log: Path | None = None
    """JSON lines file where undeliverable notifications are recorded."""


class Decision(StrEnum):
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalNotice:
    """A statement waits for approval."""

    approval_id: str
    identity: Identity
    connection: str
    session_id: str
    statement: str
    rule: str
    reason: str
    approver_groups: tuple[str, ...]
    expires_at: dt.datetime
    client_addr: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionNotice:
    """An approval request was decided (or expired, or withdrawn)."""

    approval_id: str
    decision: Decision
    identity: Identity
    connection: str
    statement: str
    decided_by: str | None = None
    reason: str = ""


Notice = ApprovalNotice | DecisionNotice


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryResult:
    ok: bool
    approval_id: str
    kind: str  # "request" or the decision
    attempts: int
    status: int | None = None
    error: str = ""

    def raise_for_failure(self) -> None:
        if not self.ok:
            raise NotifyError(
                f"approval {self.approval_id}: notification not delivered after "
                f"{self.attempts} attempts: {self.error}"
            )


# -- message ----------------------------------------------------------------------


def _escape(text: str) -> str:
    """Slack mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str, limit: int = MAX_STATEMENT_CHARS) -> str:
    if len(text) > limit:
        text = text[:limit] + "\n... (truncated)"
    return "```" + _escape(text).replace("```", "`\u200b``") + "```"


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": f"*{label}*\n{_escape(value)[:MAX_FIELD_CHARS]}"}


def _who(identity: Identity) -> str:
    groups = f" ({', '.join(identity.groups)})" if identity.groups else ""
    return identity.user + groups


def _link(template: str | None, approval_id: str) -> str:
    if not template:
        return ""
    return " - " + _escape(template.replace("{approval_id}", approval_id))


def build_message(notice: Notice, *, approval_url: str | None = None) -> dict[str, Any]:
    """The Slack-compatible payload for a notice."""
    if isinstance(notice, ApprovalNotice):
        expires = notice.expires_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        text = (
            f"Approval needed: {notice.identity.user} on {notice.connection} "
            f"(rule {notice.rule}), approval {notice.approval_id}"
        )
        fields = [
            _field("User", _who(notice.identity)),
            _field("Connection", notice.connection),
            _field("Rule", notice.rule),
            _field("Approvers", ", ".join(notice.approver_groups) or "-"),
            _field("Expires", expires),
            _field("Session", notice.session_id),
        ]
        if notice.reason:
            fields.append(_field("Reason", notice.reason))
        approve = (
            f"`sluice approvals approve {notice.approval_id}` or "
            f"`sluice approvals deny {notice.approval_id}`"
            f"{_link(approval_url, notice.approval_id)}"
        )
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": "Approval needed"}},
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "mrkdwn", "text": _code(notice.statement)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": approve}]},
        ]
        return {"text": _escape(text), "blocks": blocks}
    by = f" by {notice.decided_by}" if notice.decided_by else ""
    text = f"Approval {notice.approval_id} {notice.decision}{by}"
    fields = [
        _field("User", _who(notice.identity)),
        _field("Connection", notice.connection),
        _field("Decision", f"{notice.decision}{by}"),
    ]
    if notice.reason:
        fields.append(_field("Reason", notice.reason))
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_escape(text)}*"}},
        {"type": "section", "fields": fields},
        {"type": "section", "text": {"type": "mrkdwn", "text": _code(notice.statement)}},
    ]
    return {"text": _escape(text), "blocks": blocks}


# -- delivery ---------------------------------------------------------------------


class WebhookNotifier:
    def __init__(
        self,
        spec: NotifySpec,
        *,
        base_dir: Path | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.spec = spec
        self.url = str(spec.url)
        self._backoff = Backoff(
            initial=spec.backoff_initial_seconds, maximum=spec.backoff_max_seconds
        )
        self._sleep = sleep
        failure_log = spec.failure_log
        if failure_log is not None and base_dir is not None and not failure_log.is_absolute():
            failure_log = base_dir / failure_log
        self.failure_log = failure_log

    def _post(self, body: bytes) -> HttpResult:
        return post_json(
            self.url, body, headers=self.spec.headers, timeout=self.spec.timeout_seconds
        )

    async def notify(self, notice: Notice) -> DeliveryResult:
        """Deliver with retries; never raises for delivery failures (see DeliveryResult)."""
        payload = build_message(notice, approval_url=self.spec.approval_url)
        body = json.dumps(payload, ensure_ascii=False).encode()
        kind = "request" if isinstance(notice, ApprovalNotice) else str(notice.decision)
        result = HttpResult(status=None, error="not attempted")
        attempts = 0
        for attempts in range(1, self.spec.max_attempts + 1):
            result = await asyncio.to_thread(self._post, body)
            if result.ok:
                return DeliveryResult(
                    ok=True,
                    approval_id=notice.approval_id,
                    kind=kind,
                    attempts=attempts,
                    status=result.status,
                )
            if (
                result.status is not None
                and 400 <= result.status < 500
                and result.status
                not in (
                    408,
                    429,
                )
            ):
                break  # the receiver will not accept this message
            if attempts < self.spec.max_attempts:
                await self._sleep(self._backoff.delay(attempts))
        failed = DeliveryResult(
            ok=False,
            approval_id=notice.approval_id,
            kind=kind,
            attempts=attempts,
            status=result.status,
            error=result.error,
        )
        log.error(
            "approval %s: notification (%s) failed after %d attempts: %s",
            notice.approval_id,
            kind,
            attempts,
            result.error,
        )
        if self.failure_log is not None:
            await asyncio.to_thread(self._record_failure, failed, payload)
        return failed

    def _record_failure(self, failed: DeliveryResult, payload: dict[str, Any]) -> None:
        assert self.failure_log is not None
        record = {
            "at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "url": self.url,
            "approval_id": failed.approval_id,
            "kind": failed.kind,
            "attempts": failed.attempts,
            "status": failed.status,
            "error": failed.error,
            "payload": payload,
        }
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            self.failure_log.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(
                self.failure_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("cannot record failed notification in %s: %s", self.failure_log, exc)


# -- adapter for stored approval requests -------------------------------------------


class ApprovalLike(Protocol):
    """What the notifier reads from a stored approval (sluice.approvals.service.Approval)."""

    @property
    def id(self) -> str: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def requester(self) -> str: ...
    @property
    def requester_groups(self) -> tuple[str, ...]: ...
    @property
    def connection(self) -> str: ...
    @property
    def statement(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def approver_groups(self) -> tuple[str, ...]: ...
    @property
    def expires_at(self) -> dt.datetime: ...
    @property
    def status(self) -> str: ...
    @property
    def decided_by(self) -> str | None: ...
    @property
    def decision_reason(self) -> str | None: ...


class ApprovalNotifier:
    """Notifies about stored approval requests; reports failed deliveries to `on_failure`
    (e.g. to audit them) besides returning them."""

    def __init__(
        self,
        notifier: WebhookNotifier,
        *,
        on_failure: Callable[[DeliveryResult], None] | None = None,
    ) -> None:
        self.notifier = notifier
        self._on_failure = on_failure

    @classmethod
    def from_spec(
        cls,
        spec: NotifySpec,
        *,
        base_dir: Path | None = None,
        on_failure: Callable[[DeliveryResult], None] | None = None,
    ) -> ApprovalNotifier:
        return cls(WebhookNotifier(spec, base_dir=base_dir), on_failure=on_failure)

    async def requested(self, approval: ApprovalLike) -> DeliveryResult:
        return await self._send(
            ApprovalNotice(
                approval_id=approval.id,
                identity=Identity(user=approval.requester, groups=approval.requester_groups),
                connection=approval.connection,
                session_id=approval.session_id or "",
                statement=approval.statement,
                rule=approval.rule,
                reason=approval.reason,
                approver_groups=approval.approver_groups,
                expires_at=approval.expires_at,
            )
        )

    async def decided(self, approval: ApprovalLike) -> DeliveryResult:
        status = str(approval.status)
        decision = Decision(status) if status in {d.value for d in Decision} else Decision.APPROVED
        return await self._send(
            DecisionNotice(
                approval_id=approval.id,
                decision=decision,
                identity=Identity(user=approval.requester, groups=approval.requester_groups),
                connection=approval.connection,
                statement=approval.statement,
                decided_by=approval.decided_by,
                reason=approval.decision_reason or "",
            )
        )

    async def _send(self, notice: Notice) -> DeliveryResult:
        result = await self.notifier.notify(notice)
        if not result.ok and self._on_failure is not None:
            try:
                self._on_failure(result)
            except Exception:
                log.exception("notification failure hook raised")
        return result
