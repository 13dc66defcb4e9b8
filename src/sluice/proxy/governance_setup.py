"""Builds governance services (policy, approvals, recording, audit) from configuration."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from sluice.approvals.service import Approval, ApprovalService, ApprovalStatus
from sluice.audit import (
    ApprovalApproved,
    ApprovalDenied,
    AuditLog,
    AuditSpec,
    Outcome,
    PolicyReloaded,
    RecordingFailed,
    TokenCreated,
    TokenRevoked,
)
from sluice.config import Config, ConnectionSpec, load_config, section_error
from sluice.errors import ConfigError
from sluice.events import Identity, SessionContext
from sluice.notify.webhook import ApprovalNotifier, DeliveryResult, NotifySpec
from sluice.policy import PolicyEngine, PolicySpec
from sluice.proxy.governance import GovernanceServices
from sluice.proxy.pg_masking import masking_engine
from sluice.recording import Recorder, RecordingSpec, RecordingStore
from sluice.store.db import Store

if TYPE_CHECKING:
    from sluice.proxy.gateway import Gateway

log = logging.getLogger(__name__)


def compile_policies(config: Config) -> PolicyEngine:
    try:
        specs = [PolicySpec.model_validate(raw) for raw in config.policies]
    except ValidationError as exc:
        raise section_error("policies", exc) from exc
    engine = PolicyEngine.compile(specs)
    for conn in config.connections:
        if conn.policy is not None and conn.policy not in engine.policy_names:
            raise ConfigError(
                f"connection {conn.name!r} uses policy {conn.policy!r}, which is not declared",
                hint=f"declare it under policies:, or use one of: "
                f"{', '.join(sorted(engine.policy_names))}",
            )
    return engine


def audit_spec(config: Config) -> AuditSpec:
    try:
        return AuditSpec.model_validate(config.audit)
    except ValidationError as exc:
        raise section_error("audit", exc) from exc


def recording_spec(config: Config) -> RecordingSpec:
    try:
        return RecordingSpec.model_validate(config.recording)
    except ValidationError as exc:
        raise section_error("recording", exc) from exc


def recording_store(config: Config, audit: AuditLog | None = None) -> RecordingStore:
    def on_failure(session_id: str, exc: Exception) -> None:
        if audit is not None:
            path = store.path_for(session_id)
            audit.emit(RecordingFailed(session_id=session_id, path=str(path), error=str(exc)))

    store = RecordingStore(recording_spec(config), base_dir=config.data_dir, on_failure=on_failure)
    return store


def build_services(
    config: Config, store: Store, *, audit: AuditLog | None = None
) -> GovernanceServices:
    """Everything sessions share. Raises ConfigError on an invalid section."""
    engine = compile_policies(config)
    audit = audit or AuditLog.from_spec(audit_spec(config), base_dir=config.data_dir)
    recordings = recording_store(config, audit)
    spec = recordings.spec

    def open_recorder(context: SessionContext, conn: ConnectionSpec) -> Recorder | None:
        if not conn.recording.enabled:
            return None
        return recordings.open(context, required=conn.recording.required and spec.required)

    return GovernanceServices(
        engine=engine,
        approvals=ApprovalService(store),
        audit=audit,
        recorder_factory=open_recorder,
        masking_engine=masking_engine(config),
        notifier=approval_notifier(config, audit),
    )


def approvals_spec(config: Config) -> ApprovalsSpec:
    try:
        return ApprovalsSpec.model_validate(config.approvals)
    except ValidationError as exc:
        raise section_error("approvals", exc) from exc


def approval_notifier(config: Config, audit: AuditLog) -> ApprovalNotifier | None:
    spec = approvals_spec(config)
    if spec.webhook is None:
        return None

    def on_failure(result: DeliveryResult) -> None:
        log.error("approval notification failed: %s", result)

    return ApprovalNotifier.from_spec(spec.webhook, base_dir=config.data_dir, on_failure=on_failure)


class ApprovalsSpec(BaseModel):
    """The `approvals:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook: NotifySpec | None = None
    """Post each request to a Slack-compatible webhook (with retries)."""


def audit_decision(config: Config, approval: Approval, approver: Identity) -> None:
    """Audit an approver's decision taken from the CLI."""
    audit = AuditLog.from_spec(audit_spec(config), base_dir=config.data_dir)
    try:
        kind = ApprovalApproved if approval.status is ApprovalStatus.APPROVED else ApprovalDenied
        audit.emit(
            kind(
                identity=approver,
                connection=approval.connection,
                session_id=approval.session_id,
                rule=approval.rule,
                reason=approval.decision_reason or "",
                approval_id=approval.id,
                approver=approver.user,
            )
        )
    finally:
        audit.close()


def admin_audit(config: Config, kind: str, **fields: Any) -> None:
    """Audit an administrative action taken from the CLI (tokens)."""
    try:
        audit = AuditLog.from_spec(audit_spec(config), base_dir=config.data_dir)
    except ConfigError:
        log.exception("cannot open the audit log")
        return
    try:
        if kind == "token.created":
            audit.emit(
                TokenCreated(
                    token_id=fields["token_id"],
                    subject=fields["user"],
                    subject_groups=tuple(fields["groups"]),
                    identity=Identity(user="cli"),
                )
            )
        elif kind == "token.revoked":
            audit.emit(
                TokenRevoked(
                    token_id=fields["token_id"],
                    subject=fields["user"],
                    identity=Identity(user="cli"),
                )
            )
    finally:
        audit.close()


class PolicyReloader:
    """Reloads policies (and masking) from the config file on SIGHUP or change.

    An invalid new file is rejected with a clear log line and an audit event;
    the policy in force stays. Listeners and connections are not reloaded.
    """

    def __init__(self, gateway: Gateway, path: Path):
        self.gateway = gateway
        self.path = path
        self._mtime = self._stat()
        self.last_error: str | None = None

    def _stat(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    async def reload(self) -> bool:
        governor = self.gateway.governor
        current = governor.services
        assert current is not None
        text = ""
        try:
            text = await asyncio.to_thread(self.path.read_text)
            config = load_config(self.path)
            services = build_services(config, self.gateway.store, audit=current.audit)
        except (ConfigError, OSError) as exc:
            message = exc.message if isinstance(exc, ConfigError) else str(exc)
            self.last_error = message
            log.error("policy reload rejected, the previous policy stays in force: %s", message)
            current.audit.emit(
                PolicyReloaded(
                    outcome=Outcome.FAILURE, source=str(self.path), reason=message[:2000]
                )
            )
            return False
        governor.swap(services)
        self.last_error = None
        rules = sum(len(services.engine.policy(n).rules) for n in services.engine.policy_names)
        current.audit.emit(
            PolicyReloaded(
                source=str(self.path),
                digest=hashlib.sha256(text.encode()).hexdigest(),
                rules=rules,
            )
        )
        log.info("policy reloaded from %s", self.path)
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Reload whenever the file's modification time changes."""
        while True:
            await asyncio.sleep(interval)
            mtime = self._stat()
            if mtime != self._mtime:
                self._mtime = mtime
                await self.reload()
