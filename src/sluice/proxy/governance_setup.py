"""Builds governance (policy, masking, recording, audit) from configuration."""

from __future__ import annotations

from typing import Any

from sluice.config import Config


def admin_audit(config: Config, kind: str, **fields: Any) -> None:
    """Audit an administrative action (wired to the audit sinks)."""
