"""Builds governance services (policy, approvals, recording, audit) from configuration."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from sluice.approvals.service import ApprovalService
from sluice.audit import AuditLog, AuditSpec, RecordingFailed, TokenCreated, TokenRevoked
from sluice.config import Config, ConnectionSpec
from sluice.errors import ConfigError
from sluice.events import Identity, SessionContext
from sluice.policy import PolicyEngine, PolicySpec
from sluice.proxy.governance import GovernanceServices, SessionMasking
from sluice.recording import Recorder, RecordingSpec, RecordingStore
from sluice.store.db import Store

log = logging.getLogger(__name__)


def _section_error(section: str, exc: ValidationError) -> ConfigError:
    problems = "; ".join(
        f"{section}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )
    return ConfigError(f"invalid {section} configuration: {problems}")


def compile_policies(config: Config) -> PolicyEngine:
    try:
        specs = [PolicySpec.model_validate(raw) for raw in config.policies]
    except ValidationError as exc:
        raise _section_error("policies", exc) from exc
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
        raise _section_error("audit", exc) from exc


def recording_spec(config: Config) -> RecordingSpec:
    try:
        return RecordingSpec.model_validate(config.recording)
    except ValidationError as exc:
        raise _section_error("recording", exc) from exc


def recording_store(config: Config, audit: AuditLog | None = None) -> RecordingStore:
    def on_failure(path: Any, exc: Exception) -> None:
        if audit is not None:
            audit.emit(RecordingFailed(path=str(path), error=str(exc)))

    return RecordingStore(recording_spec(config), base_dir=config.data_dir,
                          on_failure=on_failure)


def build_services(config: Config, store: Store, *, audit: AuditLog | None = None,
                   masking_factory: Any = None) -> GovernanceServices:
    """Everything sessions share. Raises ConfigError on an invalid section."""
    engine = compile_policies(config)
    audit = audit or AuditLog.from_spec(audit_spec(config), base_dir=config.data_dir)
    recordings = recording_store(config, audit)
    spec = recordings.spec

    def open_recorder(context: SessionContext, conn: ConnectionSpec) -> Recorder | None:
        path = recordings.path_for(context.session_id)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Recorder.open(
            path, context, key=recordings._key, max_bytes=spec.max_bytes_per_session,
            required=conn.recording.required and spec.required,
            fsync_on_end=spec.fsync_on_end,
        )

    def no_masking(context: SessionContext, conn: ConnectionSpec) -> SessionMasking | None:
        return None

    return GovernanceServices(
        engine=engine,
        approvals=ApprovalService(store),
        audit=audit,
        recorder_factory=open_recorder,
        masking_factory=masking_factory or no_masking,
    )


def admin_audit(config: Config, kind: str, **fields: Any) -> None:
    """Audit an administrative action taken from the CLI (tokens)."""
    try:
        audit = AuditLog.from_spec(audit_spec(config), base_dir=config.data_dir)
    except ConfigError:
        log.exception("cannot open the audit log")
        return
    try:
        if kind == "token.created":
            audit.emit(TokenCreated(token_id=fields["token_id"], subject=fields["user"],
                                    subject_groups=tuple(fields["groups"]),
                                    identity=Identity(user="cli")))
        elif kind == "token.revoked":
            audit.emit(TokenRevoked(token_id=fields["token_id"], subject=fields["user"],
                                    identity=Identity(user="cli")))
    finally:
        audit.close()
