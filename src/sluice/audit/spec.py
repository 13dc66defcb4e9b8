"""Configuration of the audit trail (the `audit:` section)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

DEFAULT_QUEUE_SIZE: Final = 10_000
"""Events waiting for a network sink; past this, syslog drops (and counts) events."""

DEFAULT_MAX_SPOOL_EVENTS: Final = 1_000_000
"""Webhook events kept on disk while the receiver is down; past this, new events are
dropped (and logged) rather than filling the disk."""


class _Sink(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSinkSpec(_Sink):
    type: Literal["file"] = "file"
    path: Path = Path("audit.jsonl")
    required: bool = False
    """If the event cannot be written, `emit` raises AuditError (fail closed)."""
    fsync: Literal["always", "interval", "never"] = "interval"
    """always: fsync before emit returns; interval: written to the OS before emit
    returns, fsynced within `fsync_interval_seconds`; never: the OS decides."""
    fsync_interval_seconds: float = Field(default=1.0, gt=0, le=60)


class StdoutSinkSpec(_Sink):
    type: Literal["stdout"] = "stdout"
    queue_size: int = Field(default=DEFAULT_QUEUE_SIZE, ge=1)


class SyslogSinkSpec(_Sink):
    type: Literal["syslog"] = "syslog"
    host: str
    port: int = Field(default=514, ge=1, le=65535)
    transport: Literal["udp", "tcp"] = "udp"
    tls: bool = False
    """TCP only: RFC 5425 TLS with the system trust store (or `ca_file`)."""
    ca_file: Path | None = None
    facility: int = Field(default=13, ge=0, le=23)
    """13 is `log audit` (RFC 5424 table 1)."""
    app_name: str = Field(default="sluice", pattern=r"^[!-~]{1,48}$")
    hostname: str | None = Field(default=None, pattern=r"^[!-~]{1,255}$")
    max_message_bytes: int = Field(default=8192, ge=480, le=1024 * 1024)
    """Longer statements are cut to fit (the event says so)."""
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    queue_size: int = Field(default=DEFAULT_QUEUE_SIZE, ge=1)


class WebhookSinkSpec(_Sink):
    type: Literal["webhook"] = "webhook"
    url: HttpUrl
    spool_dir: Path = Path("audit-spool")
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token_env: str | None = None
    """Name of an environment variable holding a bearer token (never the token itself)."""
    timeout_seconds: float = Field(default=10.0, gt=0)
    backoff_initial_seconds: float = Field(default=0.5, gt=0)
    backoff_max_seconds: float = Field(default=60.0, gt=0)
    fsync: bool = False
    """fsync each spooled event (survive power loss, not only a process crash)."""
    max_spool_events: int = Field(default=DEFAULT_MAX_SPOOL_EVENTS, ge=1)


SinkSpec = Annotated[
    FileSinkSpec | StdoutSinkSpec | SyslogSinkSpec | WebhookSinkSpec,
    Field(discriminator="type"),
]


def _default_sinks() -> list[SinkSpec]:
    return [FileSinkSpec()]


class AuditSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sinks: list[SinkSpec] = Field(default_factory=_default_sinks)
    close_timeout_seconds: float = Field(default=5.0, ge=0)
    """How long `close` waits for network sinks to deliver what is queued."""
