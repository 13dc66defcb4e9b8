"""Errors of the audit trail."""

from __future__ import annotations

from sluice.errors import SluiceError


class AuditError(SluiceError):
    """A required audit sink could not record an event; the caller must fail closed."""

    sqlstate = "58030"
