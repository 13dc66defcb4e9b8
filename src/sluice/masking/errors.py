"""Errors of the masking engine.

Contract for callers: ANY exception raised by a masker (this error or any
other, which would be a bug) means "drop the message and error the client".
Never pass through data that a masker failed on.
"""

from __future__ import annotations

from sluice.errors import ConfigError, SluiceError


class MaskingError(SluiceError):
    """Masking could not be applied; the data must not reach the client.

    SQLSTATE 58000 (system_error): the gateway, not the client, failed.
    """

    sqlstate = "58000"


class MaskingConfigError(ConfigError):
    """A masking profile is invalid (bad regex, unknown detector, missing plug-in)."""
